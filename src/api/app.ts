/**
 * The HTTP API (Fastify). Routes are thin: the schema (by $id from schemas/) validates, the
 * preHandler authorizes, the handler calls one provisioning use-case, the response schema strips
 * anything not in the contract.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ApiKeyCreateRequest, ClaimRequest, DeviceRegisterRequest, DeviceState } from '../../schemas/types.js';
import type { ApiKeys, ProvisioningService } from '../provisioning/index.js';
import { schemaDocuments, schemaRef } from '../schemas.js';
import { actorOf, requireRole } from './auth.js';
import { errorHandler, sendError } from './errors.js';

export interface ApiDeps {
  service: ProvisioningService;
  apiKeys: ApiKeys;
  /** PEMs served at /v1/ca/*. */
  ca: { rootPem: string; chainPems: readonly string[] };
  logger: Logger;
  bodyLimitBytes: number;
  /** For /healthz. */
  health: () => { mqttClients: number };
}

const errorResponses = {
  '4xx': { $ref: schemaRef('error') },
  '5xx': { $ref: schemaRef('error') },
};

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

  const { service, apiKeys } = deps;

  app.get('/healthz', async () => ({ status: 'ok', ...deps.health() }));

  app.get('/v1/ca/root.pem', async (_req, reply) => reply.type('application/x-pem-file').send(deps.ca.rootPem));
  app.get('/v1/ca/chain.pem', async (_req, reply) => reply.type('application/x-pem-file').send(deps.ca.chainPems.join('')));

  app.post<{ Body: DeviceRegisterRequest }>(
    '/v1/devices',
    {
      preHandler: requireRole(apiKeys, 'device.register'),
      schema: { body: { $ref: schemaRef('device-register-request') }, response: { 201: { $ref: schemaRef('device') }, ...errorResponses } },
    },
    async (request, reply) => reply.code(201).send(await service.registerDevice(request.body, actorOf(request))),
  );

  app.get<{ Querystring: { state?: DeviceState; after?: string; limit?: string } }>(
    '/v1/devices',
    {
      preHandler: requireRole(apiKeys, 'device.read'),
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            state: { $ref: `${schemaRef('common')}#/definitions/DeviceState` },
            after: { type: 'string', maxLength: 64 },
            limit: { type: 'string', pattern: '^(?:[1-9][0-9]{0,2}|1000)$' },
          },
        },
        response: {
          200: {
            type: 'object',
            required: ['items'],
            properties: { items: { type: 'array', items: { $ref: schemaRef('device') } }, next: { type: 'string' } },
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const limit = Number(request.query.limit ?? 100);
      const query: { limit: number; state?: DeviceState; after?: string } = { limit };
      if (request.query.state) query.state = request.query.state;
      if (request.query.after) query.after = request.query.after;
      const items = await service.listDevices(query);
      return items.length === limit ? { items, next: items[items.length - 1]!.id } : { items };
    },
  );

  const idParams = {
    type: 'object',
    required: ['id'],
    properties: { id: { $ref: `${schemaRef('common')}#/definitions/DeviceId` } },
  } as const;

  app.get<{ Params: { id: string } }>(
    '/v1/devices/:id',
    {
      preHandler: requireRole(apiKeys, 'device.read'),
      schema: { params: idParams, response: { 200: { $ref: schemaRef('device') }, ...errorResponses } },
    },
    async (request) => service.getDevice(request.params.id),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/devices/:id/history',
    {
      preHandler: requireRole(apiKeys, 'device.read'),
      schema: {
        params: idParams,
        response: {
          200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: { $ref: schemaRef('device-event') } } } },
          ...errorResponses,
        },
      },
    },
    async (request) => ({ items: await service.history(request.params.id) }),
  );

  app.post<{ Body: ClaimRequest }>(
    '/v1/claims',
    {
      preHandler: requireRole(apiKeys, 'device.claim'),
      schema: { body: { $ref: schemaRef('claim-request') }, response: { 201: { $ref: schemaRef('claim-response') }, ...errorResponses } },
    },
    async (request, reply) =>
      reply.code(201).send(await service.claimDevice(request.body, { actor: actorOf(request), client: request.ip })),
  );

  app.post<{ Params: { id: string } }>(
    '/v1/devices/:id/bootstrap',
    {
      preHandler: requireRole(apiKeys, 'device.claim'),
      schema: { params: idParams, response: { 201: { $ref: schemaRef('claim-response') }, ...errorResponses } },
    },
    async (request, reply) => reply.code(201).send(await service.reissueBootstrap(request.params.id, actorOf(request))),
  );

  app.post<{ Body: ApiKeyCreateRequest }>(
    '/v1/admin/api-keys',
    {
      preHandler: requireRole(apiKeys, 'apikey.create'),
      schema: { body: { $ref: schemaRef('api-key-create-request') }, response: { 201: { $ref: schemaRef('api-key') }, ...errorResponses } },
    },
    async (request, reply) => reply.code(201).send(await apiKeys.create(request.body.name, request.body.role)),
  );

  return app;
}
