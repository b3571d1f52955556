/** Claim-code labels for the factory line: a printable sheet (HTML), or one label as SVG or PNG. */
import type { FastifyInstance } from 'fastify';
import type { LabelsRequest } from '../../../schemas/types.js';
import { labelPng, labelSheetHtml, labelSvg } from '../../factory/labels.js';
import { ProvisioningError, type ApiKeys } from '../../provisioning/index.js';
import { schemaRef } from '../../schemas.js';
import { requireRole } from '../auth.js';
import { errorResponses } from './shared.js';

export function labelRoutes(app: FastifyInstance, { apiKeys }: { apiKeys: ApiKeys }): void {
  app.post<{ Body: LabelsRequest }>(
    '/v1/labels',
    { onRequest: requireRole(apiKeys, 'device.register'), schema: { body: { $ref: schemaRef('labels-request') }, response: errorResponses } },
    async (request, reply) => {
      const { format, labels, title } = request.body;
      if (format !== 'html' && labels.length !== 1) throw new ProvisioningError('SCHEMA_INVALID', `${format} renders exactly one label; use html for a sheet`);
      const first = labels[0]!;
      switch (format) {
        case 'html':
          return reply.type('text/html; charset=utf-8').send(labelSheetHtml(labels, title ? { title } : {}));
        case 'svg':
          return reply.type('image/svg+xml').send(labelSvg(first));
        case 'png':
          return reply.type('image/png').send(await labelPng(first));
      }
    },
  );
}
