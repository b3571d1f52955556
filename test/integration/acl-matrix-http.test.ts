/**
 * The HTTP access-control matrix: every route of the Fastify app (enumerated from the app, so a
 * new route without an entry here fails) x every kind of caller: no key, malformed headers,
 * unknown, tampered and deleted keys, the service tenant's admin, each role of tenant "acme"
 * (the owner of the resources the requests name) and each role of tenant "globex" acting on
 * acme's resources. The table below is the policy as the API documents it (src/policy/roles.ts,
 * README "Roles"): which roles may call a route, and what the owner and a foreign tenant get.
 *
 * Denials are exact: 401 AUTH_REQUIRED / AUTH_INVALID, 403 ROLE_FORBIDDEN. A foreign tenant naming
 * acme's resource gets the answer a resource that never existed gets (same status, code and
 * message), and nothing changes.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeKeyAndCsr } from '../../firmware-sim/index.js';
import type { ApiKey, ClaimResponse, Device, ErrorBody, Role } from '../../schemas/types.js';
import { NETWORK } from '../helpers/device.js';
import { startTestService, type TenantKeys, type TestService } from '../helpers/service.js';

type TenantId = 'default' | 'acme' | 'globex';
const OWNER: TenantId = 'acme';

interface Caller {
  name: string;
  /** The Authorization header, if any. */
  header?: string;
  tenant?: TenantId;
  role?: Role;
  /** A caller refused before any role check. */
  refused?: readonly [401, 'AUTH_REQUIRED' | 'AUTH_INVALID'];
}

/** What a request must answer. `check` looks further (body, stored state). */
interface Expect {
  status: number;
  code?: string;
  check?: (res: LightMyRequestResponse, call: Call) => void | Promise<void>;
}

interface Call {
  caller: Caller;
  /** The acme resource the request names (device id, key id, CA id), when it names one. */
  target?: string;
  /** Whether the caller got through authentication and the role check. */
  admitted: boolean;
  own: boolean;
}

interface RouteSpec {
  /** Roles that may call it; 'public' needs no key at all. */
  roles: readonly Role[] | 'public';
  /** Only the service tenant's admins (tenant creation). */
  serviceTenantOnly?: true;
  /** The request, naming acme's resources; a fresh target where the call changes state. */
  request: () => Promise<{ inject: InjectOptions; target?: string }> | { inject: InjectOptions; target?: string };
  /** Answer to an admitted caller of acme. */
  own: Expect;
  /** Answer to an admitted caller of another tenant (globex, the service tenant). */
  foreign: Expect | ((caller: Caller) => Expect);
  /** Runs after every call, admitted or not: what changed (or did not) in the target. */
  after?: (call: Call) => Promise<void>;
  /** Server-sent events: checked as soon as the head of the answer is out (the stream has no end). */
  stream?: true;
}

const ALL: readonly Role[] = ['admin', 'factory', 'installer', 'hub', 'viewer'];

let ts: TestService;
let keys: Record<TenantId, TenantKeys>;
let callers: Caller[];
let caPem: string;
let n = 0;

const auth = (key: string) => ({ authorization: `Bearer ${key}` });
const inject = (opts: InjectOptions) => ts.running.api.inject(opts);
const fresh = (prefix: string) => `${prefix}-${++n}-${Date.now().toString(36)}`;

async function registerOwned(opts: { claim?: boolean } = {}): Promise<{ id: string; claimCode: string }> {
  const id = fresh('acme-dev');
  const claimCode = `code-${id}-secret`;
  const reg = await inject({ method: 'POST', url: '/v1/devices', headers: auth(keys.acme.factory), payload: { id, model: 'thermostat', claimCode } });
  expect(reg.statusCode, reg.body).toBe(201);
  if (opts.claim) {
    const c = await inject({ method: 'POST', url: '/v1/claims', headers: auth(keys.acme.installer), payload: { claimCode, owner: 'o', site: 's', network: NETWORK } });
    expect(c.statusCode, c.body).toBe(201);
  }
  return { id, claimCode };
}

const stateOf = async (id: string) => (await ts.running.store.getDevice(id))?.state;
const bodyOf = <T>(res: LightMyRequestResponse) => res.json() as T;
/** The caller's tenant must be the one in the answer (scoped, never acme's for a foreigner). */
const tenantIs = (res: LightMyRequestResponse, call: Call, get: (b: never) => string) => expect(get(res.json() as never)).toBe(call.caller.tenant);
const listedTenants = (res: LightMyRequestResponse) => new Set((res.json() as { items: { tenantId: string }[] }).items.map((i) => i.tenantId));

/** A foreign caller must get exactly what a never-existing resource gets: nothing tells them apart. */
async function sameAsMissing(res: LightMyRequestResponse, call: Call, probe: (id: string) => InjectOptions): Promise<void> {
  const ghost = fresh('ghost');
  const missing = await inject({ ...probe(ghost), headers: { authorization: call.caller.header! } });
  expect(res.statusCode).toBe(missing.statusCode);
  expect(res.body.replaceAll(call.target!, '<id>')).toBe(missing.body.replaceAll(ghost, '<id>'));
}

/** Routes naming one acme device: the owner acts, a foreigner gets the missing-device answer. */
function deviceRoute(
  method: 'GET' | 'POST',
  leaf: string,
  roles: readonly Role[],
  target: () => Promise<string>,
  own: Expect,
  after?: RouteSpec['after'],
): RouteSpec {
  const url = (id: string) => `/v1/devices/${id}${leaf}`;
  return {
    roles,
    request: async () => {
      const id = await target();
      return { inject: { method, url: url(id), ...(method === 'POST' ? { payload: {} } : {}) }, target: id };
    },
    own,
    foreign: { status: 404, code: 'DEVICE_NOT_FOUND', check: (res, call) => sameAsMissing(res, call, (id) => ({ method, url: url(id), ...(method === 'POST' ? { payload: {} } : {}) })) },
    ...(after ? { after } : {}),
  };
}

/** A device that stays registered throughout (reads; actions its state refuses). */
let steady: string;
const steadyDevice = async () => steady;
/** Whatever is refused leaves the target as it was. */
const unchangedUnless = (ownState: string, otherwise: string) => async (call: Call) => {
  expect(await stateOf(call.target!)).toBe(call.admitted && call.own ? ownState : otherwise);
};

const PROFILE = {
  name: 'matrix',
  deadlineSeconds: 3600,
  items: [{ id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} }],
};

/**
 * The policy. Every route of the app must be here; HEAD follows its GET.
 */
const ROUTES: Record<string, RouteSpec> = {
  // ---- public: CA material and health
  'GET /healthz': { roles: 'public', request: () => ({ inject: { url: '/healthz' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /livez': { roles: 'public', request: () => ({ inject: { url: '/livez' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /readyz': { roles: 'public', request: () => ({ inject: { url: '/readyz' } }), own: { status: 200 }, foreign: { status: 200 } },
  // ---- public: the OpenAPI document and its page (assets from @fastify/swagger-ui)
  'GET /openapi.json': { roles: 'public', request: () => ({ inject: { url: '/openapi.json' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /docs': { roles: 'public', request: () => ({ inject: { url: '/docs' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /docs/': { roles: 'public', request: () => ({ inject: { url: '/docs/' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /docs/json': { roles: 'public', request: () => ({ inject: { url: '/docs/json' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /docs/yaml': { roles: 'public', request: () => ({ inject: { url: '/docs/yaml' } }), own: { status: 200 }, foreign: { status: 200 } },
  // redirects to /docs/ (the page)
  'GET /docs/static/index.html': { roles: 'public', request: () => ({ inject: { url: '/docs/static/index.html' } }), own: { status: 302 }, foreign: { status: 302 } },
  'GET /docs/static/swagger-initializer.js': { roles: 'public', request: () => ({ inject: { url: '/docs/static/swagger-initializer.js' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /docs/static/*': { roles: 'public', request: () => ({ inject: { url: '/docs/static/swagger-ui.css' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /v1/ca/root.pem': { roles: 'public', request: () => ({ inject: { url: '/v1/ca/root.pem' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /v1/ca/chain.pem': { roles: 'public', request: () => ({ inject: { url: '/v1/ca/chain.pem' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /v1/ca/crl': { roles: 'public', request: () => ({ inject: { url: '/v1/ca/crl' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /v1/ca/crl.pem': { roles: 'public', request: () => ({ inject: { url: '/v1/ca/crl.pem' } }), own: { status: 200 }, foreign: { status: 200 } },

  // ---- tenants (only the service tenant creates them), keys, profiles: admins
  'POST /v1/tenants': {
    roles: ['admin'],
    serviceTenantOnly: true,
    request: () => ({ inject: { method: 'POST', url: '/v1/tenants', payload: { id: fresh('t'), name: 'matrix tenant' } } }),
    own: { status: 201 },
    foreign: { status: 201 },
  },
  'GET /v1/tenant': {
    roles: ['admin'],
    request: () => ({ inject: { url: '/v1/tenant' } }),
    own: { status: 200, check: (res, call) => tenantIs(res, call, (b: { id: string }) => b.id) },
    foreign: { status: 200, check: (res, call) => tenantIs(res, call, (b: { id: string }) => b.id) },
  },
  'PATCH /v1/tenant': {
    roles: ['admin'],
    request: () => ({ inject: { method: 'PATCH', url: '/v1/tenant', payload: { serverKeyGeneration: true } } }),
    own: { status: 200, check: (res, call) => tenantIs(res, call, (b: { id: string }) => b.id) },
    foreign: { status: 200, check: (res, call) => tenantIs(res, call, (b: { id: string }) => b.id) },
  },
  'POST /v1/tenant/manufacturer-cas': {
    roles: ['admin'],
    request: () => ({ inject: { method: 'POST', url: '/v1/tenant/manufacturer-cas', payload: { id: 'matrix-fab', name: 'matrix fab', certificate: caPem } } }),
    own: { status: 201, check: (res, call) => tenantIs(res, call, (b: { id: string }) => b.id) },
    foreign: { status: 201, check: (res, call) => tenantIs(res, call, (b: { id: string }) => b.id) },
  },
  'DELETE /v1/tenant/manufacturer-cas/:id': {
    roles: ['admin'],
    request: async () => {
      const id = fresh('fab');
      const add = await inject({ method: 'POST', url: '/v1/tenant/manufacturer-cas', headers: auth(keys.acme.admin), payload: { id, name: 'to delete', certificate: caPem } });
      expect(add.statusCode).toBe(201);
      return { inject: { method: 'DELETE', url: `/v1/tenant/manufacturer-cas/${id}` }, target: id };
    },
    // the route acts on the caller's own tenant, which does not trust this CA: a 404 there
    own: { status: 200, check: (res, call) => tenantIs(res, call, (b: { id: string }) => b.id) },
    foreign: { status: 404, code: 'MANUFACTURER_CA_NOT_FOUND' },
    after: async (call) => {
      const cas = (await ts.running.store.getTenant(OWNER))?.manufacturerCas ?? [];
      expect(cas.some((c) => c.id === call.target)).toBe(!(call.admitted && call.own));
    },
  },
  'POST /v1/admin/api-keys': {
    roles: ['admin'],
    request: () => ({ inject: { method: 'POST', url: '/v1/admin/api-keys', payload: { name: 'matrix', role: 'viewer' } } }),
    own: { status: 201, check: (res, call) => tenantIs(res, call, (b: ApiKey) => b.tenantId) },
    foreign: { status: 201, check: (res, call) => tenantIs(res, call, (b: ApiKey) => b.tenantId) },
  },
  'GET /v1/admin/api-keys': {
    roles: ['admin'],
    request: () => ({ inject: { url: '/v1/admin/api-keys' } }),
    own: { status: 200, check: (res, call) => expect(listedTenants(res)).toEqual(new Set([call.caller.tenant])) },
    foreign: { status: 200, check: (res, call) => expect(listedTenants(res)).toEqual(new Set([call.caller.tenant])) },
  },
  'DELETE /v1/admin/api-keys/:id': {
    roles: ['admin'],
    request: async () => {
      const key = await ts.running.apiKeys.create(OWNER, 'spare', 'viewer');
      return { inject: { method: 'DELETE', url: `/v1/admin/api-keys/${key.id}` }, target: key.id };
    },
    own: { status: 204 },
    foreign: { status: 404, code: 'API_KEY_NOT_FOUND', check: (res, call) => sameAsMissing(res, call, (id) => ({ method: 'DELETE', url: `/v1/admin/api-keys/${id}` })) },
    after: async (call) => expect(await ts.running.store.getApiKey(call.target!)).toEqual(call.admitted && call.own ? undefined : expect.objectContaining({ id: call.target })),
  },
  'PUT /v1/profiles/:id': {
    roles: ['admin'],
    request: () => ({ inject: { method: 'PUT', url: '/v1/profiles/matrix', payload: PROFILE } }),
    // profile ids are per tenant: a foreigner writes its own "matrix", never acme's
    own: { status: 200, check: (res, call) => tenantIs(res, call, (b: { profile: { tenantId: string } }) => b.profile.tenantId) },
    foreign: { status: 200, check: (res, call) => tenantIs(res, call, (b: { profile: { tenantId: string } }) => b.profile.tenantId) },
  },
  'GET /v1/profiles': {
    roles: ['admin', 'factory', 'installer', 'viewer'],
    request: () => ({ inject: { url: '/v1/profiles' } }),
    own: { status: 200, check: (res, call) => expect(listedTenants(res)).toEqual(new Set([call.caller.tenant])) },
    foreign: { status: 200, check: (res, call) => expect(listedTenants(res)).toEqual(new Set([call.caller.tenant])) },
  },
  'GET /v1/profiles/:id': {
    roles: ['admin', 'factory', 'installer', 'viewer'],
    request: () => ({ inject: { url: '/v1/profiles/acme-only' }, target: 'acme-only' }),
    own: { status: 200, check: (res) => expect(bodyOf<{ tenantId: string }>(res).tenantId).toBe(OWNER) },
    foreign: { status: 404, code: 'PROFILE_NOT_FOUND', check: (res, call) => sameAsMissing(res, call, (id) => ({ url: `/v1/profiles/${id}` })) },
  },

  // ---- the device registry: factory and admins register, everyone with a key reads
  'POST /v1/devices': {
    roles: ['admin', 'factory'],
    request: () => ({ inject: { method: 'POST', url: '/v1/devices', payload: { id: fresh('reg'), model: 'thermostat', claimCode: `code-${fresh('c')}-x` } } }),
    own: { status: 201, check: (res, call) => tenantIs(res, call, (b: Device) => b.tenantId) },
    foreign: { status: 201, check: (res, call) => tenantIs(res, call, (b: Device) => b.tenantId) },
  },
  'POST /v1/devices/import': {
    roles: ['admin', 'factory'],
    request: () => {
      const id = fresh('imp');
      return { inject: { method: 'POST', url: '/v1/devices/import', payload: { devices: [{ id, model: 'thermostat', claimCode: `code-${id}-x` }] } }, target: id };
    },
    own: { status: 200 },
    foreign: { status: 200 },
    after: async (call) => expect((await ts.running.store.getDevice(call.target!))?.tenantId).toBe(call.admitted ? call.caller.tenant : undefined),
  },
  'GET /v1/devices': {
    roles: ALL,
    request: () => ({ inject: { url: '/v1/devices?limit=1000' } }),
    own: {
      status: 200,
      check: (res, call) => {
        expect(listedTenants(res)).toEqual(new Set([call.caller.tenant]));
        expect(bodyOf<{ items: Device[] }>(res).items.map((d) => d.id)).toContain(steady);
      },
    },
    foreign: { status: 200, check: (res, call) => expect([...listedTenants(res)].every((t) => t === call.caller.tenant)).toBe(true) },
  },
  'GET /v1/devices/:id': deviceRoute('GET', '', ALL, steadyDevice, { status: 200, check: (res) => expect(bodyOf<Device>(res)).toMatchObject({ id: steady, tenantId: OWNER }) }),
  'GET /v1/devices/:id/history': deviceRoute('GET', '/history', ALL, steadyDevice, { status: 200, check: (res) => expect(bodyOf<{ items: unknown[] }>(res).items.length).toBeGreaterThan(0) }),
  // the device's own event stream (the installer page): whoever may read the device
  'GET /v1/devices/:id/events': { ...deviceRoute('GET', '/events', ALL, steadyDevice, { status: 200 }), stream: true },

  // ---- claims and per-device actions
  'POST /v1/claims': {
    roles: ['admin', 'installer', 'hub'],
    request: async () => {
      const { id, claimCode } = await registerOwned();
      return { inject: { method: 'POST', url: '/v1/claims', payload: { claimCode, owner: 'o', site: 's' } }, target: id };
    },
    own: { status: 201, check: (res, call) => expect(bodyOf<ClaimResponse>(res).device).toMatchObject({ id: call.target, tenantId: OWNER }) },
    // acme's right code from another tenant is a wrong code (hubs.md, tenants.test.ts)
    foreign: { status: 403, code: 'CLAIM_CODE_INVALID' },
    after: unchangedUnless('claimed', 'registered'),
  },
  'POST /v1/devices/:id/bootstrap': deviceRoute('POST', '/bootstrap', ['admin', 'installer', 'hub'], async () => (await registerOwned({ claim: true })).id, { status: 201 }, async (call) => {
    const events = (await ts.running.store.listEvents(call.target!)).map((e) => e.type);
    expect(events.includes('bootstrap_reissued')).toBe(call.admitted && call.own);
  }),
  'POST /v1/devices/:id/release': deviceRoute('POST', '/release', ['admin', 'installer'], async () => (await registerOwned({ claim: true })).id, { status: 200 }, unchangedUnless('released', 'claimed')),
  'POST /v1/devices/:id/decommission': deviceRoute('POST', '/decommission', ['admin'], async () => (await registerOwned()).id, { status: 200 }, unchangedUnless('decommissioned', 'registered')),
  // the state refuses these for the owner (no identity yet): 409 after authorization, nothing changes
  'POST /v1/devices/:id/reprovision': deviceRoute('POST', '/reprovision', ['admin', 'installer'], steadyDevice, { status: 409, code: 'DEVICE_STATE_INVALID' }),
  'POST /v1/devices/:id/revoke': deviceRoute('POST', '/revoke', ['admin'], steadyDevice, { status: 409, code: 'DEVICE_STATE_INVALID' }),
  'POST /v1/devices/:id/renew': deviceRoute('POST', '/renew', ['admin'], steadyDevice, { status: 409, code: 'DEVICE_STATE_INVALID' }),
  'POST /v1/devices/:id/config/push': deviceRoute('POST', '/config/push', ['admin'], steadyDevice, { status: 409, code: 'DEVICE_STATE_INVALID' }),

  // ---- reports and the event stream: admins and viewers, of their own tenant
  'GET /v1/reports/fleet': {
    roles: ['admin', 'viewer'],
    request: () => ({ inject: { url: '/v1/reports/fleet' } }),
    own: { status: 200, check: (res, call) => tenantIs(res, call, (b: { tenantId: string }) => b.tenantId) },
    foreign: { status: 200, check: (res, call) => tenantIs(res, call, (b: { tenantId: string }) => b.tenantId) },
  },
  'GET /v1/reports/devices.csv': {
    roles: ['admin', 'viewer'],
    request: () => ({ inject: { url: '/v1/reports/devices.csv' } }),
    own: { status: 200, check: (res) => expect(res.body).toContain(steady) },
    foreign: { status: 200, check: (res) => expect(res.body).not.toContain('acme-dev') },
  },
  'GET /v1/events': { roles: ['admin', 'viewer'], stream: true, request: () => ({ inject: { url: '/v1/events' } }), own: { status: 200 }, foreign: { status: 200 } },

  // ---- the installer page (docs/installers.md): static; it calls the API with the installer's key
  'GET /install': { roles: 'public', request: () => ({ inject: { url: '/install' } }), own: { status: 200 }, foreign: { status: 200 } },
  // redirects to /install (the page)
  'GET /install/': { roles: 'public', request: () => ({ inject: { url: '/install/' } }), own: { status: 302 }, foreign: { status: 302 } },
  'GET /install/app.js': { roles: 'public', request: () => ({ inject: { url: '/install/app.js' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /install/style.css': { roles: 'public', request: () => ({ inject: { url: '/install/style.css' } }), own: { status: 200 }, foreign: { status: 200 } },
  // ---- the dashboard (docs/dashboard.md): no API key gets in; its JSON wants the session cookie
  'GET /dashboard': { roles: 'public', request: () => ({ inject: { url: '/dashboard' } }), own: { status: 200 }, foreign: { status: 200 } },
  'GET /dashboard/assets/:file': { roles: 'public', request: () => ({ inject: { url: '/dashboard/assets/dashboard.js' } }), own: { status: 200 }, foreign: { status: 200 } },
  'POST /dashboard/api/session': {
    roles: 'public',
    request: () => ({ inject: { method: 'POST', url: '/dashboard/api/session', payload: { apiKey: 'pdk_0000000000000000_' + 'x'.repeat(43) } } }),
    own: { status: 401, code: 'AUTH_INVALID' },
    foreign: { status: 401, code: 'AUTH_INVALID' },
  },
  'GET /dashboard/api/session': { roles: 'public', request: () => ({ inject: { url: '/dashboard/api/session' } }), own: { status: 200 }, foreign: { status: 200 } },
  'DELETE /dashboard/api/session': { roles: 'public', request: () => ({ inject: { method: 'DELETE', url: '/dashboard/api/session' } }), own: { status: 401, code: 'SESSION_REQUIRED' }, foreign: { status: 401, code: 'SESSION_REQUIRED' } },
  'GET /dashboard/api/overview': { roles: 'public', request: () => ({ inject: { url: '/dashboard/api/overview' } }), own: { status: 401, code: 'SESSION_REQUIRED' }, foreign: { status: 401, code: 'SESSION_REQUIRED' } },
  'GET /dashboard/api/stalled': { roles: 'public', request: () => ({ inject: { url: '/dashboard/api/stalled' } }), own: { status: 401, code: 'SESSION_REQUIRED' }, foreign: { status: 401, code: 'SESSION_REQUIRED' } },
  'GET /dashboard/api/devices/:id': { roles: 'public', request: () => ({ inject: { url: '/dashboard/api/devices/acme-dev' } }), own: { status: 401, code: 'SESSION_REQUIRED' }, foreign: { status: 401, code: 'SESSION_REQUIRED' } },
  ...Object.fromEntries(
    ['release', 'config-push', 'revoke', 'decommission'].map((a): [string, RouteSpec] => [
      `POST /dashboard/api/devices/:id/${a}`,
      { roles: 'public', request: () => ({ inject: { method: 'POST', url: `/dashboard/api/devices/acme-dev/${a}`, payload: {} } }), own: { status: 401, code: 'SESSION_REQUIRED' }, foreign: { status: 401, code: 'SESSION_REQUIRED' } },
    ]),
  ),

  // ---- the factory line: factory and admins, for their own tenant's registered devices
  'POST /v1/factory/certificates': {
    roles: ['admin', 'factory'],
    request: async () => {
      const { id } = await registerOwned();
      const { csrPem } = await makeKeyAndCsr(id);
      return { inject: { method: 'POST', url: '/v1/factory/certificates', payload: { devices: [{ deviceId: id, csr: csrPem }] } }, target: id };
    },
    own: { status: 200, check: (res) => expect(bodyOf<{ issued: number }>(res).issued).toBe(1) },
    foreign: { status: 200, check: (res) => expect(bodyOf<{ results: unknown[] }>(res).results).toEqual([expect.objectContaining({ status: 'failed', code: 'DEVICE_NOT_FOUND' })]) },
    after: async (call) => expect(Boolean((await ts.running.store.getDevice(call.target!))?.certificateSerial)).toBe(call.admitted && call.own),
  },
  'POST /v1/factory/bundles': {
    roles: ['admin', 'factory'],
    request: async () => {
      const { id } = await registerOwned();
      return { inject: { method: 'POST', url: '/v1/factory/bundles', payload: { devices: [id] } }, target: id };
    },
    own: { status: 200, check: (res) => expect(bodyOf<{ results: unknown[] }>(res).results).toEqual([expect.objectContaining({ status: 'issued' })]) },
    foreign: { status: 200, check: (res) => expect(bodyOf<{ results: unknown[] }>(res).results).toEqual([expect.objectContaining({ status: 'failed', code: 'DEVICE_NOT_FOUND' })]) },
    after: async (call) => expect(Boolean((await ts.running.store.getDevice(call.target!))?.certificateSerial)).toBe(call.admitted && call.own),
  },
  // ---- the audit log: admins and viewers of their own tenant; the service tenant's admins of any tenant
  'GET /v1/audit': {
    roles: ['admin', 'viewer'],
    request: () => ({ inject: { url: `/v1/audit?tenant=${OWNER}&limit=1000` } }),
    own: { status: 200, check: (res) => expect(listedTenants(res)).toEqual(new Set([OWNER])) },
    foreign: (caller) =>
      caller.tenant === 'default' && caller.role === 'admin' ? { status: 200, check: (res) => expect([...listedTenants(res)].every((t) => t === OWNER)).toBe(true) } : { status: 403, code: 'ROLE_FORBIDDEN' },
    // without a tenant filter everyone but the service admins reads their own tenant's log only
    after: async (call) => {
      if (!call.admitted || (call.caller.tenant === 'default' && call.caller.role === 'admin')) return;
      const res = await inject({ url: '/v1/audit?limit=1000', headers: { authorization: call.caller.header! } });
      expect(res.statusCode).toBe(200);
      expect([...listedTenants(res)].every((t) => t === call.caller.tenant)).toBe(true);
    },
  },
  // ---- service-wide metrics: only keys of the service tenant
  'GET /metrics': { roles: ['admin', 'viewer'], serviceTenantOnly: true, request: () => ({ inject: { url: '/metrics' } }), own: { status: 200 }, foreign: { status: 200 } },

  'POST /v1/labels': {
    roles: ['admin', 'factory'],
    request: () => ({ inject: { method: 'POST', url: '/v1/labels', payload: { format: 'svg', labels: [{ deviceId: 'label-dev', claimCode: 'ABCD-EFGH-JKMN' }] } } }),
    own: { status: 200 },
    foreign: { status: 200 },
  },
};

/** What `caller` must get from `spec`. */
function expected(spec: RouteSpec, caller: Caller): { expect: Expect; admitted: boolean; own: boolean } {
  const own = caller.tenant === OWNER;
  if (spec.roles === 'public') return { expect: spec.own, admitted: true, own: true };
  if (caller.refused) return { expect: { status: caller.refused[0], code: caller.refused[1] }, admitted: false, own };
  const allowed = spec.roles.includes(caller.role!) && (!spec.serviceTenantOnly || caller.tenant === 'default');
  if (!allowed) return { expect: { status: 403, code: 'ROLE_FORBIDDEN' }, admitted: false, own };
  const foreign = typeof spec.foreign === 'function' ? spec.foreign(caller) : spec.foreign;
  return { expect: own ? spec.own : foreign, admitted: true, own };
}

const WILDCARD_PRINTED_AS: Record<string, string> = { '/docs/*': '/docs/static/*' };

/** The routes Fastify serves, as "METHOD /path" (from printRoutes' tree). */
function servedRoutes(): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of ts.running.api.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^(.*?)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    const path = (stack[depth - 1] ?? '') + m[2]!;
    stack[depth] = path;
    stack.length = depth + 1;
    // find-my-way prints a wildcard that shares a static prefix with its siblings without that
    // prefix (@fastify/swagger-ui's /docs/static/* shows as * under /docs/)
    const served = WILDCARD_PRINTED_AS[path] ?? path;
    for (const method of m[3]?.split(', ') ?? []) out.push(`${method} ${served}`);
  }
  return out;
}

/** A stream's status without waiting for its end (it has none): the answer as soon as its head is out. */
async function streamStatus(req: InjectOptions): Promise<{ status: number; code?: string; type: string | undefined }> {
  const res = await inject({ ...req, payloadAsStream: true });
  const stream = res.stream();
  const type = res.headers['content-type'] as string | undefined;
  if (res.statusCode === 200) {
    stream.destroy();
    return { status: 200, type };
  }
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return { status: res.statusCode, type, ...(text ? { code: (JSON.parse(text) as ErrorBody).code } : {}) };
}

beforeAll(async () => {
  // the claim throttle is not what this file is about: foreign callers try acme's codes often
  ts = await startTestService({ claims: { maxFailedAttempts: 1000 }, http: { rateLimitPerClientPerSecond: 0, rateLimitPerTenantPerSecond: 0 } } as never);
  keys = { default: ts.keys, acme: await ts.tenant('acme'), globex: await ts.tenant('globex') };
  for (const t of ['default', 'acme', 'globex'] as const) {
    // bundles answer SERVER_KEYGEN_DISABLED to a tenant without it; the matrix wants the tenant check
    expect((await inject({ method: 'PATCH', url: '/v1/tenant', headers: auth(keys[t].admin), payload: { serverKeyGeneration: true } })).statusCode).toBe(200);
  }
  expect((await inject({ method: 'PUT', url: '/v1/profiles/acme-only', headers: auth(keys.acme.admin), payload: PROFILE })).statusCode).toBe(200);
  steady = (await registerOwned()).id;

  const dir = mkdtempSync(join(tmpdir(), 'acl-http-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30', '-subj', '/CN=matrix fab CA', '-keyout', 'k.pem', '-out', 'c.pem', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign'], { cwd: dir, stdio: 'pipe' });
    caPem = readFileSync(join(dir, 'c.pem'), 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const deleted = (await inject({ method: 'POST', url: '/v1/admin/api-keys', headers: auth(keys.acme.admin), payload: { name: 'gone', role: 'admin' } })).json() as ApiKey;
  expect((await inject({ method: 'DELETE', url: `/v1/admin/api-keys/${deleted.id}`, headers: auth(keys.acme.admin) })).statusCode).toBe(204);
  const admin = keys.acme.admin;
  const tampered = admin.slice(0, -1) + (admin.endsWith('A') ? 'B' : 'A');
  callers = [
    { name: 'no key', refused: [401, 'AUTH_REQUIRED'] },
    { name: 'Basic credentials', header: `Basic ${Buffer.from(`acme:${admin}`).toString('base64')}`, refused: [401, 'AUTH_INVALID'] },
    { name: 'Bearer without key', header: 'Bearer', refused: [401, 'AUTH_INVALID'] },
    { name: 'valid key with trailing garbage', header: `Bearer ${admin} x`, refused: [401, 'AUTH_INVALID'] },
    { name: 'unknown key', header: `Bearer pdk_0123456789abcdef_${'A'.repeat(43)}`, refused: [401, 'AUTH_INVALID'] },
    { name: 'not a key', header: 'Bearer admin', refused: [401, 'AUTH_INVALID'] },
    { name: 'tampered admin key', header: `Bearer ${tampered}`, refused: [401, 'AUTH_INVALID'] },
    { name: 'deleted admin key', header: `Bearer ${deleted.secret!}`, refused: [401, 'AUTH_INVALID'] },
    { name: 'service admin', header: `Bearer ${keys.default.admin}`, tenant: 'default', role: 'admin' },
    { name: 'service viewer', header: `Bearer ${keys.default.viewer}`, tenant: 'default', role: 'viewer' },
    ...(['acme', 'globex'] as const).flatMap((tenant) => ALL.map((role): Caller => ({ name: `${tenant} ${role}`, header: `Bearer ${keys[tenant][role]}`, tenant, role }))),
  ];
});
afterAll(async () => {
  await ts?.stop();
});

describe('HTTP access-control matrix', () => {
  it('every route the app serves has an entry in the matrix, and every entry is served', () => {
    const served = servedRoutes();
    expect(served.length).toBeGreaterThan(20);
    for (const route of served) {
      const [method, url] = route.split(' ') as [InjectOptions['method'], string];
      expect(ts.running.api.hasRoute({ method: method!, url }), `parsed ${route}`).toBe(true);
    }
    // HEAD is Fastify's automatic twin of GET: checked with its GET below
    const needed = served.map((r) => r.replace(/^HEAD /, 'GET '));
    expect([...new Set(needed)].filter((r) => !(r in ROUTES)), 'routes without a matrix entry').toEqual([]);
    expect(Object.keys(ROUTES).filter((r) => !served.includes(r)), 'matrix entries the app does not serve').toEqual([]);
  });

  for (const [route, spec] of Object.entries(ROUTES)) {
    it(route, async () => {
      const cells: string[] = [];
      for (const caller of callers) {
        const want = expected(spec, caller);
        const methods: ('HEAD' | undefined)[] = route.startsWith('GET ') ? [undefined, 'HEAD'] : [undefined];
        for (const head of methods) {
          const { inject: req, target } = await spec.request();
          const call: Call = { caller, admitted: want.admitted, own: want.own, ...(target !== undefined ? { target } : {}) };
          const label = `${head ?? route.split(' ')[0]} ${route.split(' ')[1]} as ${caller.name}`;
          const headers = { ...(req.headers ?? {}), ...(caller.header ? { authorization: caller.header } : {}) };
          if (spec.stream) {
            const got = await streamStatus({ ...req, ...(head ? { method: 'HEAD' } : {}), headers });
            expect(got.status, label).toBe(want.expect.status);
            if (got.status === 200) expect(got.type, label).toMatch(/^text\/event-stream/);
            else if (!head) expect(got.code, label).toBe(want.expect.code);
            cells.push(`${label}: ${got.status}`);
            continue;
          }
          const res = await inject({ ...req, ...(head ? { method: 'HEAD' } : {}), headers });
          expect(res.statusCode, `${label}: ${res.body}`).toBe(want.expect.status);
          if (!head && want.expect.code) expect((res.json() as ErrorBody).code, label).toBe(want.expect.code);
          if (!head) await want.expect.check?.(res, call);
          await spec.after?.(call);
          cells.push(`${label}: ${res.statusCode}`);
        }
      }
      expect(cells.length).toBeGreaterThanOrEqual(callers.length);
    });
  }

  it('registering an id or a claim code another tenant holds is refused without saying whose it is', async () => {
    const taken = await registerOwned({ claim: true });
    const before = await ts.running.store.getDevice(taken.id);
    // device ids are global (MQTT client ids, certificate subjects): the refusal is unavoidable
    const dup = await inject({ method: 'POST', url: '/v1/devices', headers: auth(keys.globex.factory), payload: { id: taken.id, model: 'thermostat', claimCode: 'some-other-code-123' } });
    expect([dup.statusCode, (dup.json() as ErrorBody).code]).toEqual([409, 'DEVICE_EXISTS']);
    const code = await inject({ method: 'POST', url: '/v1/devices', headers: auth(keys.globex.factory), payload: { id: fresh('globex-dev'), model: 'thermostat', claimCode: taken.claimCode } });
    expect([code.statusCode, (code.json() as ErrorBody).code]).toEqual([409, 'CLAIM_CODE_IN_USE']);
    for (const res of [dup, code]) {
      // a fixed message: not the holder's tenant, state or owner
      expect(res.body).not.toContain(OWNER);
      expect(res.body).not.toMatch(/claimed|"state"|owner/);
    }
    expect(code.body).not.toContain(taken.id);
    expect(await ts.running.store.getDevice(taken.id)).toEqual(before);
  });
});
