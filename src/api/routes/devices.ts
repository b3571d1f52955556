/** The device registry, claims and per-device lifecycle actions. */
import type { ClaimRequest, DeviceImportRequest, DeviceRegisterRequest, DeviceState } from '../../../schemas/types.js';
import { ProvisioningError } from '../../provisioning/index.js';
import { describeErrors, getValidator, schemaRef } from '../../schemas.js';
import { csvRecords } from '../csv.js';
import { ctxOf, requireRole } from '../auth.js';
import { errorResponses, idParams, reasonBody, type Routes } from './shared.js';

/** A 50,000-row CSV of ids, models and codes stays well below this. */
const IMPORT_BODY_LIMIT = 16 * 1024 * 1024;

/** Query strings of GET /v1/devices and POST /v1/devices/import (also fuzzed by test/fuzz/http-routes.test.ts). */
export const DEVICE_LIST_QUERY = {
  type: 'object',
  additionalProperties: false,
  properties: {
    state: { $ref: `${schemaRef('common')}#/definitions/DeviceState` },
    profileId: { $ref: `${schemaRef('common')}#/definitions/ProfileId` },
    after: { type: 'string', maxLength: 64 },
    limit: { type: 'string', pattern: '^(?:[1-9][0-9]{0,2}|1000)$' },
  },
};
export const DEVICE_IMPORT_QUERY = { type: 'object', additionalProperties: false, properties: { mode: { type: 'string', enum: ['atomic', 'partial'] } } };

export const deviceRoutes: Routes = (app, { service, lifecycle, apiKeys, imports, ajv }) => {
  const validateImport = getValidator<DeviceImportRequest>(ajv, 'device-import-request');
  app.addContentTypeParser('text/csv', { parseAs: 'string', bodyLimit: IMPORT_BODY_LIMIT }, (_req, body, done) => done(null, body));

  const device = { 200: { $ref: schemaRef('device') }, ...errorResponses };

  app.post<{ Body: DeviceRegisterRequest }>(
    '/v1/devices',
    {
      onRequest: requireRole(apiKeys, 'device.register'),
      schema: { summary: 'Register a device', tags: ['devices'], body: { $ref: schemaRef('device-register-request') }, response: { 201: { $ref: schemaRef('device') }, ...errorResponses } },
    },
    async (request, reply) => reply.code(201).send(await service.registerDevice(ctxOf(request), request.body)),
  );

  // Bulk registration: JSON ({devices: [...]}) or CSV (header: id,model[,claimCode]).
  app.post<{ Body: DeviceImportRequest | string; Querystring: { mode?: 'atomic' | 'partial' } }>(
    '/v1/devices/import',
    {
      onRequest: requireRole(apiKeys, 'device.register'),
      bodyLimit: IMPORT_BODY_LIMIT,
      schema: {
        summary: 'Import devices from CSV or JSON (all or nothing)',
        tags: ['devices'],
        querystring: DEVICE_IMPORT_QUERY,
        response: { 200: { $ref: schemaRef('device-import-result') }, 422: { $ref: schemaRef('device-import-result') }, ...errorResponses },
      },
      preValidation: async (request) => {
        if (typeof request.body === 'string') return;
        if (!validateImport(request.body)) throw new ProvisioningError('SCHEMA_INVALID', `body: ${describeErrors(validateImport.errors)}`);
      },
    },
    async (request, reply) => {
      const rows = typeof request.body === 'string' ? csvRecords(request.body, ['id', 'model'], ['claimCode']) : request.body.devices;
      const result = await imports.run(ctxOf(request), rows, request.query.mode ?? 'atomic');
      return reply.code(result.imported ? 200 : 422).send(result);
    },
  );

  app.get<{ Querystring: { state?: DeviceState; profileId?: string; after?: string; limit?: string } }>(
    '/v1/devices',
    {
      onRequest: requireRole(apiKeys, 'device.read'),
      schema: {
        summary: 'List devices (filtered, paged)',
        tags: ['devices'],
        querystring: DEVICE_LIST_QUERY,
        response: {
          200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: { $ref: schemaRef('device') } }, next: { type: 'string' } } },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const limit = Number(request.query.limit ?? 100);
      const { state, profileId, after } = request.query;
      const items = await service.listDevices(ctxOf(request), { limit, ...(state ? { state } : {}), ...(profileId ? { profileId } : {}), ...(after ? { after } : {}) });
      return items.length === limit ? { items, next: items[items.length - 1]!.id } : { items };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/devices/:id',
    { onRequest: requireRole(apiKeys, 'device.read'), schema: { summary: 'Get a device', tags: ['devices'], params: idParams, response: device } },
    async (request) => service.getDevice(ctxOf(request), request.params.id),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/devices/:id/history',
    {
      onRequest: requireRole(apiKeys, 'device.read'),
      schema: {
        summary: "A device's lifecycle history (its events)",
        tags: ['devices'],
        params: idParams,
        response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: { $ref: schemaRef('device-event') } } } }, ...errorResponses },
      },
    },
    async (request) => ({ items: await service.history(ctxOf(request), request.params.id) }),
  );

  app.post<{ Body: ClaimRequest }>(
    '/v1/claims',
    {
      onRequest: requireRole(apiKeys, 'device.claim'),
      schema: { summary: 'Claim a device with its claim code (answers its bootstrap credential)', tags: ['devices'], body: { $ref: schemaRef('claim-request') }, response: { 201: { $ref: schemaRef('claim-response') }, ...errorResponses } },
    },
    async (request, reply) => reply.code(201).send(await service.claimDevice({ ...ctxOf(request), client: request.ip }, request.body)),
  );

  const claimResponse = { 201: { $ref: schemaRef('claim-response') }, ...errorResponses };
  app.post<{ Params: { id: string } }>(
    '/v1/devices/:id/bootstrap',
    { onRequest: requireRole(apiKeys, 'device.claim'), schema: { summary: 'Issue a new bootstrap credential for a claimed device', tags: ['devices'], params: idParams, response: claimResponse } },
    async (request, reply) => reply.code(201).send(await service.reissueBootstrap(ctxOf(request), request.params.id)),
  );
  app.post<{ Params: { id: string } }>(
    '/v1/devices/:id/reprovision',
    { onRequest: requireRole(apiKeys, 'device.reprovision'), schema: { summary: 'Reprovision a device (a new bootstrap credential)', tags: ['devices'], params: idParams, response: claimResponse } },
    async (request, reply) => reply.code(201).send(await lifecycle.reprovision(ctxOf(request), request.params.id)),
  );

  const action = (path: string, op: 'device.release' | 'device.admin', summary: string, run: (ctx: ReturnType<typeof ctxOf>, id: string, reason?: string) => Promise<unknown>) =>
    app.post<{ Params: { id: string }; Body: { reason?: string } | undefined }>(
      `/v1/devices/:id/${path}`,
      {
        // the body is optional: no body reads as {}
        preValidation: async (request) => {
          if (request.body === undefined || request.body === null) request.body = {};
        },
        onRequest: requireRole(apiKeys, op),
        schema: { summary, tags: ['devices'], params: idParams, body: reasonBody, response: device },
      },
      async (request) => run(ctxOf(request), request.params.id, request.body?.reason),
    );
  action('release', 'device.release', 'Release a device from its owner', (ctx, id, reason) => lifecycle.release(ctx, id, reason));
  action('revoke', 'device.admin', "Revoke a device's certificates", (ctx, id, reason) => lifecycle.revoke(ctx, id, reason));
  action('decommission', 'device.admin', 'Decommission a device for good', (ctx, id, reason) => lifecycle.decommission(ctx, id, reason));
  action('config/push', 'device.admin', 'Push the current configuration to a device', (ctx, id) => lifecycle.pushConfig(ctx, id));
  action('renew', 'device.admin', 'Ask a device to renew its certificate', (ctx, id) => lifecycle.requestRenewal(ctx, id));
};
