/**
 * The HTTP API (Fastify). Routes are thin: the schema (by $id from schemas/) validates, the
 * preHandler authenticates the API key and checks its role, the handler calls one use-case in the
 * caller's tenant, the response schema strips anything not in the contract.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { FactoryLine, FleetReports } from '../provisioning/index.js';
import { schemaDocuments } from '../schemas.js';
import { errorHandler, sendError } from './errors.js';
import { adminRoutes } from './routes/admin.js';
import { caRoutes } from './routes/ca.js';
import { deviceRoutes } from './routes/devices.js';
import { factoryRoutes } from './routes/factory.js';
import { reportRoutes } from './routes/reports.js';
import type { RouteDeps } from './routes/shared.js';

export interface ApiDeps extends RouteDeps {
  reports: FleetReports;
  factory: FactoryLine;
  logger: Logger;
  bodyLimitBytes: number;
  /** For /healthz. */
  health: () => { mqttClients: number };
}

export function buildApi(deps: ApiDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.bodyLimitBytes,
    trustProxy: false,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
  });
  for (const doc of schemaDocuments) app.addSchema(doc);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) => sendError(reply, 404, 'NOT_FOUND', `no route ${request.method} ${request.url}`));

  app.get('/healthz', async () => ({ status: 'ok', ...deps.health() }));
  caRoutes(app, deps);
  deviceRoutes(app, deps);
  adminRoutes(app, deps);
  reportRoutes(app, deps);
  factoryRoutes(app, deps);
  return app;
}
