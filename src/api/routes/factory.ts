/**
 * The factory line: in-line issuance of device identities from CSRs, and claim-code labels (a
 * printable sheet as HTML, or one label as SVG or PNG).
 */
import type { FastifyInstance } from 'fastify';
import type { FactoryBundlesRequest, FactoryIssueRequest, LabelsRequest } from '../../../schemas/types.js';
import { labelPng, labelSheetHtml, labelSvg } from '../../factory/labels.js';
import { ProvisioningError, type ApiKeys, type FactoryLine } from '../../provisioning/index.js';
import { schemaRef } from '../../schemas.js';
import { ctxOf, requireRole } from '../auth.js';
import { errorResponses } from './shared.js';

export function factoryRoutes(app: FastifyInstance, { apiKeys, factory }: { apiKeys: ApiKeys; factory: FactoryLine }): void {
  app.post<{ Body: FactoryIssueRequest }>(
    '/v1/factory/certificates',
    {
      onRequest: requireRole(apiKeys, 'device.register'),
      bodyLimit: 16 * 1024 * 1024,
      schema: { summary: 'Issue device identities on the factory line', tags: ['factory'], body: { $ref: schemaRef('factory-issue-request') }, response: { 200: { $ref: schemaRef('factory-issue-result') }, ...errorResponses } },
    },
    async (request) => factory.issue(ctxOf(request), request.body),
  );

  app.post<{ Body: FactoryBundlesRequest }>(
    '/v1/factory/bundles',
    {
      onRequest: requireRole(apiKeys, 'device.register'),
      schema: { summary: 'Issue device identities as PKCS#12 bundles', tags: ['factory'], body: { $ref: schemaRef('factory-bundles-request') }, response: { 200: { $ref: schemaRef('factory-bundles-result') }, ...errorResponses } },
    },
    async (request) => factory.bundles(ctxOf(request), request.body),
  );

  app.post<{ Body: LabelsRequest }>(
    '/v1/labels',
    { onRequest: requireRole(apiKeys, 'device.register'), schema: { summary: 'Render claim-code labels (HTML sheet, SVG or PNG)', tags: ['factory'], body: { $ref: schemaRef('labels-request') }, response: errorResponses } },
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
