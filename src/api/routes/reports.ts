/** Fleet reports (JSON, CSV) and the live event stream (SSE), per tenant. */
import { Readable } from 'node:stream';
import { schemaRef } from '../../schemas.js';
import { ctxOf, requireRole } from '../auth.js';
import { errorResponses, type RouteDeps } from './shared.js';
import { requireRoleOrSession, type DashboardDeps } from './dashboard.js';
import type { FastifyInstance } from 'fastify';
import type { FleetReports } from '../../provisioning/index.js';

export function reportRoutes(app: FastifyInstance, deps: RouteDeps & { reports: FleetReports; dashboard?: DashboardDeps }): void {
  const { apiKeys, reports, streams } = deps;
  app.get(
    '/v1/reports/fleet',
    { onRequest: requireRole(apiKeys, 'report.read'), schema: { summary: 'Fleet report: counts by state, stalled devices', tags: ['reports'], response: { 200: { $ref: schemaRef('fleet-report') }, ...errorResponses } } },
    async (request) => reports.report(ctxOf(request)),
  );
  app.get('/v1/reports/devices.csv', { onRequest: requireRole(apiKeys, 'report.read'), schema: { summary: 'Every device as CSV', tags: ['reports'], response: errorResponses } }, async (request, reply) => {
    const ctx = ctxOf(request);
    return reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="devices-${ctx.tenantId}.csv"`)
      .send(Readable.from(reports.csv(ctx)));
  });
  // the dashboard's EventSource sends its session cookie instead of a key (./dashboard.ts)
  app.get('/v1/events', { onRequest: requireRoleOrSession(apiKeys, deps.dashboard?.sessions, 'report.read'), schema: { summary: "The tenant's events, live (server-sent events)", tags: ['events'], response: errorResponses } }, async (request, reply) => {
    streams.open(ctxOf(request).tenantId, request, reply);
    return reply;
  });
}
