/** Tenants, API keys and profiles: what admins manage. */
import type { ApiKeyCreateRequest, ManufacturerCaRequest, ProfileRequest, TenantCreateRequest, TenantUpdateRequest } from '../../../schemas/types.js';
import { toTenantView } from '../../provisioning/index.js';
import { schemaRef } from '../../schemas.js';
import { ctxOf, requireRole } from '../auth.js';
import { errorResponses, type Routes } from './shared.js';

/** The query string of GET /v1/profiles/:id (also fuzzed by test/fuzz/http-routes.test.ts). */
export const PROFILE_VERSION_QUERY = { type: 'object', additionalProperties: false, properties: { version: { type: 'string', pattern: '^[1-9][0-9]{0,8}$' } } };

export const adminRoutes: Routes = (app, { tenants, apiKeys, profiles, lifecycle }) => {
  app.post<{ Body: TenantCreateRequest }>(
    '/v1/tenants',
    {
      onRequest: requireRole(apiKeys, 'tenant.create'),
      schema: {
        summary: 'Create a tenant (service tenant admins)',
        tags: ['tenants'],
        body: { $ref: schemaRef('tenant-create-request') },
        response: {
          201: { type: 'object', required: ['tenant', 'adminKey'], properties: { tenant: { $ref: schemaRef('tenant') }, adminKey: { $ref: schemaRef('api-key') } } },
          ...errorResponses,
        },
      },
    },
    async (request, reply) => reply.code(201).send(await tenants.create(ctxOf(request), request.body)),
  );

  const tenantResponse = { 200: { $ref: schemaRef('tenant') }, ...errorResponses };
  app.get('/v1/tenant', { onRequest: requireRole(apiKeys, 'tenant.manage'), schema: { summary: "Get the caller's tenant", tags: ['tenants'], response: tenantResponse } }, async (request) =>
    toTenantView(await tenants.get(ctxOf(request).tenantId)),
  );
  app.patch<{ Body: TenantUpdateRequest }>(
    '/v1/tenant',
    { onRequest: requireRole(apiKeys, 'tenant.manage'), schema: { summary: "Update the caller's tenant", tags: ['tenants'], body: { $ref: schemaRef('tenant-update-request') }, response: tenantResponse } },
    async (request) => tenants.update(ctxOf(request), request.body),
  );

  app.post<{ Body: ManufacturerCaRequest }>(
    '/v1/tenant/manufacturer-cas',
    { onRequest: requireRole(apiKeys, 'tenant.manage'), schema: { summary: 'Add a manufacturer CA (zero-touch)', tags: ['tenants'], body: { $ref: schemaRef('manufacturer-ca-request') }, response: { 201: { $ref: schemaRef('tenant') }, ...errorResponses } } },
    async (request, reply) => reply.code(201).send(await tenants.addManufacturerCa(ctxOf(request), request.body)),
  );
  app.delete<{ Params: { id: string } }>(
    '/v1/tenant/manufacturer-cas/:id',
    {
      onRequest: requireRole(apiKeys, 'tenant.manage'),
      schema: { summary: 'Remove a manufacturer CA', tags: ['tenants'], params: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' } } }, response: tenantResponse },
    },
    async (request) => tenants.removeManufacturerCa(ctxOf(request), request.params.id),
  );

  app.post<{ Body: ApiKeyCreateRequest }>(
    '/v1/admin/api-keys',
    {
      onRequest: requireRole(apiKeys, 'apikey.manage'),
      schema: { summary: 'Create an API key', tags: ['api-keys'], body: { $ref: schemaRef('api-key-create-request') }, response: { 201: { $ref: schemaRef('api-key') }, ...errorResponses } },
    },
    async (request, reply) => {
      const ctx = ctxOf(request);
      return reply.code(201).send(await apiKeys.create(ctx.tenantId, request.body.name, request.body.role, ctx.actor));
    },
  );
  app.get(
    '/v1/admin/api-keys',
    {
      onRequest: requireRole(apiKeys, 'apikey.manage'),
      schema: { summary: 'List API keys', tags: ['api-keys'], response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: { $ref: schemaRef('api-key') } } } }, ...errorResponses } },
    },
    async (request) => ({ items: await apiKeys.list(ctxOf(request).tenantId) }),
  );
  app.delete<{ Params: { id: string } }>(
    '/v1/admin/api-keys/:id',
    {
      onRequest: requireRole(apiKeys, 'apikey.manage'),
      schema: { summary: 'Revoke an API key', tags: ['api-keys'], params: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: '^[0-9a-z-]{1,64}$' } } }, response: errorResponses },
    },
    async (request, reply) => {
      const ctx = ctxOf(request);
      await apiKeys.delete(ctx.tenantId, request.params.id, ctx.actor);
      return reply.code(204).send();
    },
  );

  const profileParams = { type: 'object', required: ['id'], properties: { id: { $ref: `${schemaRef('common')}#/definitions/ProfileId` } } } as const;
  app.put<{ Params: { id: string }; Body: ProfileRequest }>(
    '/v1/profiles/:id',
    {
      onRequest: requireRole(apiKeys, 'profile.write'),
      schema: {
        summary: 'Create or replace a provisioning profile',
        tags: ['profiles'],
        params: profileParams,
        body: { $ref: schemaRef('profile-request') },
        response: {
          200: {
            type: 'object',
            required: ['profile', 'rollout'],
            properties: { profile: { $ref: schemaRef('profile') }, rollout: { type: 'object', required: ['updated'], properties: { updated: { type: 'integer' } } } },
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { profile, previous } = await profiles.put(ctxOf(request), request.params.id, request.body);
      const rollout = previous ? await lifecycle.rollOut(profile, previous) : { updated: 0 };
      return { profile, rollout };
    },
  );
  app.get(
    '/v1/profiles',
    {
      onRequest: requireRole(apiKeys, 'profile.read'),
      schema: { summary: 'List provisioning profiles', tags: ['profiles'], response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: { $ref: schemaRef('profile') } } } }, ...errorResponses } },
    },
    async (request) => ({ items: await profiles.list(ctxOf(request)) }),
  );
  app.get<{ Params: { id: string }; Querystring: { version?: string } }>(
    '/v1/profiles/:id',
    {
      onRequest: requireRole(apiKeys, 'profile.read'),
      schema: {
        summary: 'Get a provisioning profile',
        tags: ['profiles'],
        params: profileParams,
        querystring: PROFILE_VERSION_QUERY,
        response: { 200: { $ref: schemaRef('profile') }, ...errorResponses },
      },
    },
    async (request) => profiles.get(ctxOf(request), request.params.id, request.query.version ? Number(request.query.version) : undefined),
  );
};
