/**
 * Probes for orchestrators and load balancers (never authenticated, never rate-limited:
 * RATE_LIMIT_EXEMPT in src/api/rate-limit.ts):
 * - GET /livez: the process is up and its HTTP server answers (restart it when this fails);
 * - GET /readyz: this instance can do work now (the store answers a ping, the MQTT and HTTP
 *   listeners accept, the service is not stopping); 503 NOT_READY otherwise (take it out of the
 *   load balancer, do not restart it);
 * - GET /healthz: liveness with the number of connected MQTT clients (the Docker HEALTHCHECK).
 */
import type { FastifyInstance } from 'fastify';
import { sendError, UNAVAILABLE_RETRY_SECONDS } from '../errors.js';
import { errorResponses } from './shared.js';

export interface HealthDeps {
  /** For /healthz. */
  health: () => { mqttClients: number };
  /**
   * For /readyz: undefined when ready, else why not (the store does not answer, the MQTT listener
   * is not up, ...). Absent: ready whenever the HTTP listener is.
   */
  readiness?: () => Promise<string | undefined>;
}

const TAGS = ['health'];

export function healthRoutes(app: FastifyInstance, deps: HealthDeps, stopping: () => boolean): void {
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness with the number of connected MQTT clients',
        tags: TAGS,
        security: [],
        response: {
          200: { type: 'object', required: ['status', 'mqttClients'], properties: { status: { type: 'string', enum: ['ok'] }, mqttClients: { type: 'integer', minimum: 0 } } },
        },
      },
    },
    async () => ({ status: 'ok', ...deps.health() }),
  );

  app.get(
    '/livez',
    {
      schema: {
        summary: 'Liveness: the process is up',
        tags: TAGS,
        security: [],
        response: { 200: { type: 'object', required: ['status'], properties: { status: { type: 'string', enum: ['ok'] } } } },
      },
    },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Readiness: the store answers, the MQTT and HTTP listeners are up, the service is not stopping',
        tags: TAGS,
        security: [],
        response: {
          200: { type: 'object', required: ['status'], properties: { status: { type: 'string', enum: ['ready'] } } },
          ...errorResponses,
        },
      },
    },
    async (_request, reply) => {
      const reason = stopping() ? 'the service is stopping' : !app.server.listening ? 'the HTTP listener is not up' : await deps.readiness?.();
      if (reason !== undefined) return sendError(reply, 503, 'NOT_READY', reason, { retryAfterSeconds: UNAVAILABLE_RETRY_SECONDS });
      return { status: 'ready' };
    },
  );
}
