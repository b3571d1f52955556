/** Fleet reports (JSON, CSV) and the live event stream (SSE), per tenant. */
import { Readable } from 'node:stream';
import { schemaRef } from '../../schemas.js';
import { ctxOf, requireRole } from '../auth.js';
import { errorResponses, type RouteDeps } from './shared.js';
import type { FastifyInstance } from 'fastify';
import type { FleetReports } from '../../provisioning/index.js';

export function reportRoutes(app: FastifyInstance, deps: RouteDeps & { reports: FleetReports }): void {
  const { apiKeys, reports, streams } = deps;
  app.get(
    '/v1/reports/fleet',
    { onRequest: requireRole(apiKeys, 'report.read'), schema: { response: { 200: { $ref: schemaRef('fleet-report') }, ...errorResponses } } },
    async (request) => reports.report(ctxOf(request)),
  );
  app.get('/v1/reports/devices.csv', { onRequest: requireRole(apiKeys, 'report.read') }, async (request, reply) => {
    const ctx = ctxOf(request);
    return reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="devices-${ctx.tenantId}.csv"`)
      .send(Readable.from(reports.csv(ctx)));
  });
  app.get('/v1/events', { onRequest: requireRole(apiKeys, 'report.read') }, async (request, reply) => {
    streams.open(ctxOf(request).tenantId, request, reply);
    return reply;
  });
}
