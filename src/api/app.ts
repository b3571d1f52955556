/**
 * The HTTP API (Fastify). Routes are thin: the schema (by $id from schemas/) validates, the
 * preHandler authenticates the API key and checks its role, the handler calls one use-case in the
 * caller's tenant, the response schema strips anything not in the contract.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics/index.js';
import type { AuditLog, FactoryLine, FleetReports } from '../provisioning/index.js';
import { schemaDocuments } from '../schemas.js';
import { errorCodeSent, errorHandler, sendError } from './errors.js';
import { registerOpenApi } from './openapi.js';
import { installRateLimits, type HttpRateLimits } from './rate-limit.js';
import { adminRoutes } from './routes/admin.js';
import { auditRoutes } from './routes/audit.js';
import { caRoutes } from './routes/ca.js';
import { dashboardRoutes, type DashboardDeps } from './routes/dashboard.js';
import { deviceRoutes } from './routes/devices.js';
import { factoryRoutes } from './routes/factory.js';
import { healthRoutes, type HealthDeps } from './routes/health.js';
import { installerRoutes } from './routes/installer.js';
import { metricsRoutes } from './routes/metrics.js';
import { reportRoutes } from './routes/reports.js';
import type { RouteDeps } from './routes/shared.js';

export interface ApiDeps extends RouteDeps, HealthDeps {
  reports: FleetReports;
  factory: FactoryLine;
  logger: Logger;
  bodyLimitBytes: number;
  /** GET /v1/audit. */
  auditLog: AuditLog;
  /** GET /metrics. */
  metrics: Metrics;
  /** Request-rate limits per client and per tenant (none when absent). */
  rateLimits?: Omit<HttpRateLimits, 'metrics'>;
  /** The operator dashboard (/dashboard, docs/dashboard.md); not served when absent. */
  dashboard?: DashboardDeps;
}

export function buildApi(deps: ApiDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.bodyLimitBytes,
    trustProxy: false,
    // while stopping, requests on kept-alive connections get our coded 503 (hook below)
    return503OnClosing: false,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
    // the router's own refusals (a path that is not valid percent-encoding, a parameter over
    // maxParamLength) would otherwise leave as Fastify's bodies (FST_ERR_BAD_URL 400,
    // FST_ERR_MAX_PARAM_LENGTH 414) instead of schemas/error.json with our code
    frameworkErrors: (error, request, reply) =>
      error.code === 'FST_ERR_BAD_URL' || error.code === 'FST_ERR_MAX_PARAM_LENGTH'
        ? sendError(reply, 400, 'INVALID_PARAMS', error.code === 'FST_ERR_BAD_URL' ? 'the URL path is not valid percent-encoding' : 'a path parameter is too long')
        : errorHandler(error, request, reply),
  });
  for (const doc of schemaDocuments) app.addSchema(doc);
  app.setErrorHandler(errorHandler);
  // From close() on (SIGTERM): the listener is closed, requests already running finish, and a new
  // request on a kept-alive connection is refused with a code the client can retry elsewhere.
  let stopping = false;
  app.addHook('preClose', (done) => {
    stopping = true;
    done();
  });
  app.addHook('onRequest', (_request, reply, done) => {
    if (!stopping) return done();
    reply.header('connection', 'close').header('retry-after', '5');
    sendError(reply, 503, 'SERVICE_STOPPING', 'the service is stopping; retry (another instance may answer)');
  });
  app.setNotFoundHandler((request, reply) => sendError(reply, 404, 'NOT_FOUND', `no route ${request.method} ${request.url}`));
  // every error answer (sendError), by its code: provisiond_http_errors_total
  app.addHook('onResponse', (_request, reply, done) => {
    const code = errorCodeSent(reply);
    if (code !== undefined) deps.metrics.httpErrors.inc({ code });
    done();
  });
  if (deps.rateLimits) installRateLimits(app, { ...deps.rateLimits, metrics: deps.metrics });

  // GET /openapi.json and /docs; the routes are added once it is loaded (it collects them as they are)
  registerOpenApi(app);
  app.register(async (app) => {
    healthRoutes(app, deps, () => stopping);
    caRoutes(app, deps);
    deviceRoutes(app, deps);
    adminRoutes(app, deps);
    reportRoutes(app, deps);
    factoryRoutes(app, deps);
    installerRoutes(app, deps);
    auditRoutes(app, deps);
    metricsRoutes(app, deps);
    if (deps.dashboard) dashboardRoutes(app, { ...deps, dashboard: deps.dashboard });
  });
  return app;
}
