/** GET /metrics: the Prometheus text exposition of this instance's metrics (src/metrics). */
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../../metrics/index.js';
import { SERVICE_TENANT } from '../../policy/index.js';
import { ProvisioningError, type ApiKeys } from '../../provisioning/index.js';
import { ctxOf, requireRole } from '../auth.js';
import { errorResponses } from './shared.js';

export function metricsRoutes(app: FastifyInstance, deps: { apiKeys: ApiKeys; metrics: Metrics }): void {
  app.get('/metrics', { onRequest: requireRole(deps.apiKeys, 'metrics.read'), schema: { summary: 'Prometheus metrics of this instance (service tenant admin or viewer)', tags: ['metrics'], response: errorResponses } }, async (request, reply) => {
    // service-wide figures: for the operators (the service tenant), not for the other tenants
    if (ctxOf(request).tenantId !== SERVICE_TENANT) throw new ProvisioningError('ROLE_FORBIDDEN', 'metrics are read with an admin or viewer key of the service tenant');
    const { contentType, body } = await deps.metrics.render();
    return reply.type(contentType).header('cache-control', 'no-store').send(body);
  });
}
