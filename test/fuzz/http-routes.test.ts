/**
 * Fuzzes every route of the HTTP API, valid and invalid input generated from the JSON Schemas the
 * routes use (test/helpers/schema-arbitrary.ts), with path parameters, query strings, bodies,
 * content types and Authorization headers varied, against a real service (SQLite in a temp dir).
 *
 * Invariants, for every case: no 5xx; every 4xx is schemas/error.json with a code documented in
 * docs/operations.md (and every `code` inside a 2xx body too); input that is invalid by
 * construction is rejected with the code its kind calls for; and a rejected request changes
 * nothing stored: the whole store's digest (audit log aside: refused actions are recorded there
 * by design, but never as a success) is compared after every case during which a writing store
 * method succeeded (test/helpers/fuzz.ts StoreWatch counts them), and after every 250 cases
 * otherwise, with the digest taken after the last accepted write.
 *
 * The routes come from the running app (printRoutes): a route without a spec here fails the
 * suite. PROVISIOND_FUZZ_RUNS cases per route (default 200; `npm run test:fuzz`: 10,000).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import type { InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, makeKeyAndCsr } from '../../firmware-sim/index.js';
import type { ClaimResponse, ErrorBody } from '../../schemas/types.js';
import { roleAllows, type Operation } from '../../src/policy/index.js';
import { PROFILE_VERSION_QUERY } from '../../src/api/routes/admin.js';
import { AUDIT_QUERY } from '../../src/api/routes/audit.js';
import { DEVICE_IMPORT_QUERY, DEVICE_LIST_QUERY } from '../../src/api/routes/devices.js';
import { schemaRef } from '../../src/schemas.js';
import { NETWORK, corruptSignature } from '../helpers/device.js';
import { FUZZ_RUNS, StoreWatch, brief, documentedHttpCodes, fuzzParams, fuzzTimeout, fuzzService } from '../helpers/fuzz.js';
import { SchemaArbitraries, anyObject, rawJsonVariants, toJsonText, type Schema } from '../helpers/schema-arbitrary.js';
import { startTestService, type TenantKeys, type TestService } from '../helpers/service.js';

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
type Role = keyof TenantKeys;
type SchemaObject = Exclude<Schema, boolean>;
const ROLES: readonly Role[] = ['admin', 'factory', 'installer', 'hub', 'viewer'];
const BODY_LIMIT = 32 * 1024;
const HUGE = BODY_LIMIT + 2048;

/** What a case must get: a rejection with one of these codes, or anything coded. */
type Expect = { codes: readonly string[]; status?: number } | 'any';
interface HttpCase {
  kind: string;
  method: Method;
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer;
  expect: Expect;
  /** Sent over a real socket (SSE streams never end under inject). */
  socket?: boolean;
}

interface BodySpec {
  schema: string | SchemaObject;
  overrides?: () => Record<string, fc.Arbitrary<unknown>>;
  /** No body reads as {} (the lifecycle actions). */
  optional?: boolean;
  /** Items above minItems in a valid array (default 3). */
  arrayExtra?: number;
}

interface RouteSpec {
  method: Exclude<Method, 'HEAD'>;
  path: string;
  /** The route's operation (src/policy/roles.ts); undefined: public. */
  op?: Operation;
  /** The `:id` parameter's schema and the ids that exist. */
  param?: { schema: SchemaObject; pool: () => readonly string[] };
  query?: SchemaObject;
  /** 'none': the route reads no body. */
  body?: BodySpec | 'none';
  /** Also takes text/csv (the import). */
  csv?: boolean;
  /** Answers 422 with a device-import-result (not an error body) when every row failed. */
  importResult?: boolean;
  /** An SSE stream: right-key GETs go over a real socket. */
  sse?: boolean;
  /** Never changes stored state, whatever it answers. */
  readOnly?: boolean;
  /** Share of valid cases (default 0.15). */
  validShare?: number;
}

const BODY_CODES = ['INVALID_BODY', 'MALFORMED_JSON', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'SCHEMA_INVALID', 'INVALID_CSV'];
/** (the body is read before the parameters are validated: a body over the limit answers first) */
const PARAM_CODES = ['INVALID_PARAMS', 'NOT_FOUND', 'PAYLOAD_TOO_LARGE'];

const arbs = new SchemaArbitraries();
const documented = documentedHttpCodes();
let ts: TestService;
let other: TenantKeys;
let watch: StoreWatch;

/** Things that exist, so that valid cases reach past "not found". */
const pool = {
  registered: [] as { id: string; claimCode: string }[],
  claimed: [] as string[],
  provisioned: [] as string[],
  newIds: Array.from({ length: 40 }, (_, i) => `fz-new-${i}`),
  importIds: Array.from({ length: 40 }, (_, i) => `fz-imp-${i}`),
  codes: [] as string[],
  profiles: ['default', 'fz-prof-1', 'fz-prof-2'],
  tenants: ['fz-t1', 'fz-t2', 'fz-t3', 'default', 'fz-other'],
  apiKeyIds: [] as string[],
  caIds: ['fz-mca-1', 'fz-mca-2'],
  caPems: [] as string[],
  csrs: [] as string[],
};
const deviceIds = () => [...pool.registered.map((d) => d.id), ...pool.claimed, ...pool.provisioned, ...pool.newIds.slice(0, 5), 'no-such-device'];

function openssl(args: string[], dir: string) {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A manufacturer CA certificate and a certificate that is not a CA. */
function manufacturerPems(): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'fuzz-mca-'));
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30'];
    openssl(['req', '-x509', ...ec, '-subj', '/CN=Fuzz Maker CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-keyout', 'ca.key', '-out', 'ca.pem'], dir);
    openssl(['req', '-x509', ...ec, '-subj', '/CN=not a ca', '-addext', 'basicConstraints=critical,CA:FALSE', '-keyout', 'leaf.key', '-out', 'leaf.pem'], dir);
    return [readFileSync(join(dir, 'ca.pem'), 'utf8'), readFileSync(join(dir, 'leaf.pem'), 'utf8')];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const auth = (key: string) => ({ authorization: `Bearer ${key}` });

beforeAll(async () => {
  ts = await startTestService(
    fuzzService({
      http: { bodyLimitBytes: BODY_LIMIT },
      claims: { maxFailedAttempts: 1000, lockoutSeconds: 1 },
      alerts: { webhookMaxAttempts: 1, webhookTimeoutMs: 200 },
    }),
  );
  watch = new StoreWatch(ts.running.store).instrument();
  other = await ts.tenant('fz-other');
  const api = ts.running.api;
  for (let i = 0; i < 12; i++) {
    const d = { id: `fz-reg-${i}`, claimCode: `fuzz-code-${i}-abcdefgh` };
    const res = await api.inject({ method: 'POST', url: '/v1/devices', headers: auth(ts.keys.factory), payload: { ...d, model: i % 3 ? 'thermostat' : 'camera' } });
    expect(res.statusCode, res.body).toBe(201);
    pool.registered.push(d);
  }
  for (let i = 0; i < 6; i++) {
    const id = `fz-cl-${i}`;
    const claimCode = `fuzz-claimed-${i}-abcdefgh`;
    expect((await api.inject({ method: 'POST', url: '/v1/devices', headers: auth(ts.keys.factory), payload: { id, model: 'thermostat', claimCode } })).statusCode).toBe(201);
    const claim = await api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode, owner: 'o', site: 's', network: NETWORK } });
    expect(claim.statusCode, claim.body).toBe(201);
    pool.claimed.push(id);
    if (i < 2) {
      // two devices that go all the way (certificate, configuration, provisioned)
      const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: (claim.json() as ClaimResponse).bootstrap! });
      await device.run();
      await device.stop();
      pool.provisioned.push(id);
    }
  }
  pool.claimed = pool.claimed.filter((id) => !pool.provisioned.includes(id));
  pool.codes = [...pool.registered.map((d) => d.claimCode), 'fuzz-claimed-3-abcdefgh', 'FUZZ-CODE-1-ABCDEFGH', 'fuzz code 2 abcdefgh'];
  for (let i = 0; i < 12; i++) pool.apiKeyIds.push((await ts.running.apiKeys.create('default', `sacrificial ${i}`, 'viewer')).id);
  pool.caPems = manufacturerPems();
  for (const id of [...pool.registered.slice(0, 4).map((d) => d.id), 'fz-new-0']) pool.csrs.push((await makeKeyAndCsr(id)).csrPem);
  pool.csrs.push(corruptSignature(pool.csrs[0]!));
  const profile = { name: 'fuzz profile', items: [{ id: 'security', type: 'security-policy', required: true, priority: 10, await: false, data: { minTlsVersion: '1.2', telemetryIntervalSeconds: 60, allowedTopics: [], firmwareFloor: '1.0.0' } }] };
  for (const id of ['fz-prof-1', 'fz-prof-2']) expect((await api.inject({ method: 'PUT', url: `/v1/profiles/${id}`, headers: auth(ts.keys.admin), payload: profile })).statusCode).toBe(200);
}, 120_000);

afterAll(async () => {
  await ts?.stop();
});

// ------------------------------------------------------------------ specs

const deviceParam = { schema: { type: 'object', required: ['id'], properties: { id: { $ref: `${schemaRef('common')}#/definitions/DeviceId` } } }, pool: deviceIds };
const profileParam = { schema: { type: 'object', required: ['id'], properties: { id: { $ref: `${schemaRef('common')}#/definitions/ProfileId` } } }, pool: () => [...pool.profiles, 'no-such-profile'] };
const reasonBody: BodySpec = { schema: { type: 'object', additionalProperties: false, properties: { reason: { type: 'string', minLength: 1, maxLength: 256 } } }, optional: true };
const localUrl = fc.constantFrom('http://127.0.0.1:9/hook', 'https://127.0.0.1:9/x?y=1', 'http://user:secret@127.0.0.1:9/', 'http://[::1]:9/');
const poolOr = <T>(values: () => readonly T[], random: fc.Arbitrary<T>) => fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...values()) }, { weight: 1, arbitrary: random });
/** Mostly what exists: for values that create a record when new (the store, and each digest, stays small). */
const mostlyPool = <T>(values: () => readonly T[], random: fc.Arbitrary<T>) => fc.oneof({ weight: 30, arbitrary: fc.constantFrom(...values()) }, { weight: 1, arbitrary: random });
const csrArb = () => fc.oneof({ weight: 2, arbitrary: fc.constantFrom(...pool.csrs) }, { weight: 1, arbitrary: fc.string({ minLength: 100, maxLength: 300 }) });
const itemData = fc.oneof(
  fc.constantFrom(
    { wifi: { ssid: 'site', security: 'open' } },
    {},
    { minTlsVersion: '1.3', telemetryIntervalSeconds: 30, allowedTopics: ['a/b'], firmwareFloor: '2.0.0' },
    { minVersion: '1.2.3' },
    { timezone: 'Europe/Berlin', ntp: ['pool.ntp.org'] },
    { timezone: 'Not/AZone' },
    { intervalSeconds: 60 },
    { wifi: { ssid: 'x', security: 'wpa2-psk', secret: 'in a profile' } },
  ),
  anyObject,
);

const ROUTES: RouteSpec[] = [
  { method: 'GET', path: '/healthz', readOnly: true },
  { method: 'GET', path: '/readyz', readOnly: true },
  { method: 'GET', path: '/livez', readOnly: true },
  // the OpenAPI document and its page (@fastify/swagger-ui); /docs/* is how printRoutes shows /docs/static/*
  { method: 'GET', path: '/openapi.json', readOnly: true },
  { method: 'GET', path: '/docs', readOnly: true },
  { method: 'GET', path: '/docs/', readOnly: true },
  { method: 'GET', path: '/docs/json', readOnly: true },
  { method: 'GET', path: '/docs/yaml', readOnly: true },
  { method: 'GET', path: '/docs/static/index.html', readOnly: true },
  { method: 'GET', path: '/docs/static/swagger-initializer.js', readOnly: true },
  { method: 'GET', path: '/docs/*', readOnly: true },
  { method: 'GET', path: '/v1/ca/root.pem', readOnly: true },
  { method: 'GET', path: '/v1/ca/chain.pem', readOnly: true },
  { method: 'GET', path: '/v1/ca/crl', readOnly: true },
  { method: 'GET', path: '/v1/ca/crl.pem', readOnly: true },
  { method: 'GET', path: '/v1/tenant', op: 'tenant.manage', readOnly: true },
  {
    method: 'PATCH',
    path: '/v1/tenant',
    op: 'tenant.manage',
    body: { schema: schemaRef('tenant-update-request'), overrides: () => ({ 'webhook.url': localUrl, 'preprovisionWebhook.url': localUrl }) },
  },
  {
    method: 'POST',
    path: '/v1/tenant/manufacturer-cas',
    op: 'tenant.manage',
    body: {
      schema: schemaRef('manufacturer-ca-request'),
      overrides: () => ({ id: poolOr(() => pool.caIds, fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,62}$/)), certificate: poolOr(() => pool.caPems, fc.string({ minLength: 100, maxLength: 400 })) }),
    },
  },
  {
    method: 'DELETE',
    path: '/v1/tenant/manufacturer-cas/:id',
    op: 'tenant.manage',
    param: { schema: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' } } }, pool: () => [...pool.caIds, 'no-such-ca'] },
    // an id the tenant does not trust is refused (MANUFACTURER_CA_NOT_FOUND) with nothing written
    validShare: 0.05,
  },
  { method: 'GET', path: '/v1/admin/api-keys', op: 'apikey.manage', readOnly: true },
  {
    method: 'DELETE',
    path: '/v1/admin/api-keys/:id',
    op: 'apikey.manage',
    param: { schema: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: '^[0-9a-z-]{1,64}$' } } }, pool: () => [...pool.apiKeyIds, '0000000000000000'] },
  },
  {
    method: 'PUT',
    path: '/v1/profiles/:id',
    op: 'profile.write',
    param: profileParam,
    body: { schema: schemaRef('profile-request'), overrides: () => ({ 'items[].data': itemData, 'defaultForModels[]': fc.constantFrom('thermostat', 'camera', 'fz-model') }) },
  },
  { method: 'GET', path: '/v1/profiles', op: 'profile.read', readOnly: true },
  {
    method: 'GET',
    path: '/v1/profiles/:id',
    op: 'profile.read',
    param: profileParam,
    query: PROFILE_VERSION_QUERY,
    readOnly: true,
  },
  {
    method: 'GET',
    path: '/v1/devices',
    op: 'device.read',
    query: DEVICE_LIST_QUERY,
    readOnly: true,
  },
  { method: 'GET', path: '/v1/devices/:id', op: 'device.read', param: deviceParam, readOnly: true },
  { method: 'GET', path: '/v1/devices/:id/events', op: 'device.read', param: deviceParam, readOnly: true, sse: true, validShare: 0.05 },
  { method: 'GET', path: '/v1/devices/:id/history', op: 'device.read', param: deviceParam, readOnly: true },
  {
    method: 'POST',
    path: '/v1/claims',
    op: 'device.claim',
    body: {
      schema: schemaRef('claim-request'),
      overrides: () => ({
        claimCode: poolOr(() => pool.codes, fc.string({ minLength: 1, maxLength: 64 })),
        deviceId: poolOr(deviceIds, fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/)),
        profileId: poolOr(() => pool.profiles, fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/)),
      }),
    },
  },
  { method: 'POST', path: '/v1/devices/:id/bootstrap', op: 'device.claim', param: deviceParam, body: 'none', validShare: 0.05 },
  { method: 'POST', path: '/v1/devices/:id/reprovision', op: 'device.reprovision', param: deviceParam, body: 'none' },
  { method: 'POST', path: '/v1/devices/:id/release', op: 'device.release', param: deviceParam, body: reasonBody },
  { method: 'POST', path: '/v1/devices/:id/revoke', op: 'device.admin', param: deviceParam, body: reasonBody },
  { method: 'POST', path: '/v1/devices/:id/decommission', op: 'device.admin', param: deviceParam, body: reasonBody, validShare: 0.05 },
  { method: 'POST', path: '/v1/devices/:id/config/push', op: 'device.admin', param: deviceParam, body: reasonBody },
  { method: 'POST', path: '/v1/devices/:id/renew', op: 'device.admin', param: deviceParam, body: reasonBody },
  { method: 'GET', path: '/v1/reports/fleet', op: 'report.read', readOnly: true },
  { method: 'GET', path: '/v1/reports/devices.csv', op: 'report.read', readOnly: true },
  { method: 'GET', path: '/v1/events', op: 'report.read', readOnly: true, sse: true, validShare: 0.05 },
  // the dashboard (docs/dashboard.md): its JSON endpoints take only a session cookie, so without one
  // every case is SESSION_REQUIRED (test/browser/dashboard.test.ts covers them signed in)
  { method: 'GET', path: '/dashboard', readOnly: true },
  { method: 'GET', path: '/dashboard/assets/:file', readOnly: true },
  // the installer page (docs/installers.md): static, public
  { method: 'GET', path: '/install', readOnly: true },
  { method: 'GET', path: '/install/', readOnly: true },
  { method: 'GET', path: '/install/app.js', readOnly: true },
  { method: 'GET', path: '/install/style.css', readOnly: true },
  { method: 'POST', path: '/dashboard/api/session', readOnly: true, body: { schema: { type: 'object', additionalProperties: false, required: ['apiKey'], properties: { apiKey: { type: 'string', minLength: 1, maxLength: 256 } } } } },
  { method: 'GET', path: '/dashboard/api/session', readOnly: true },
  { method: 'DELETE', path: '/dashboard/api/session', readOnly: true },
  { method: 'GET', path: '/dashboard/api/overview', readOnly: true },
  { method: 'GET', path: '/dashboard/api/stalled', readOnly: true },
  { method: 'GET', path: '/dashboard/api/devices/:id', readOnly: true },
  ...['release', 'config-push', 'revoke', 'decommission'].map((a): RouteSpec => ({ method: 'POST', path: `/dashboard/api/devices/:id/${a}`, readOnly: true })),
  { method: 'GET', path: '/metrics', op: 'metrics.read', readOnly: true },
  {
    method: 'GET',
    path: '/v1/audit',
    op: 'audit.read',
    query: AUDIT_QUERY,
    readOnly: true,
  },
  {
    method: 'POST',
    path: '/v1/factory/certificates',
    op: 'device.register',
    body: { schema: schemaRef('factory-issue-request'), overrides: () => ({ 'devices[].deviceId': poolOr(deviceIds, fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/)), 'devices[].csr': csrArb() }) },
  },
  {
    method: 'POST',
    path: '/v1/factory/bundles',
    op: 'device.register',
    body: {
      schema: schemaRef('factory-bundles-request'),
      // (an RSA key takes ~100 ms to make: few of them, few devices per request)
      overrides: () => ({ 'devices[]': poolOr(deviceIds, fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/)), keyType: fc.oneof({ weight: 49, arbitrary: fc.constant('P-256') }, { weight: 1, arbitrary: fc.constant('RSA-2048') }) }),
      arrayExtra: 1,
    },
    validShare: 0.05,
  },
  { method: 'POST', path: '/v1/labels', op: 'device.register', body: { schema: schemaRef('labels-request') }, readOnly: true },
  // the routes that create records last: every digest reads the whole store
  {
    method: 'POST',
    path: '/v1/tenants',
    op: 'tenant.create',
    body: { schema: schemaRef('tenant-create-request'), overrides: () => ({ id: mostlyPool(() => pool.tenants, fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,62}$/)), 'webhook.url': localUrl }) },
    validShare: 0.1,
  },
  { method: 'POST', path: '/v1/admin/api-keys', op: 'apikey.manage', body: { schema: schemaRef('api-key-create-request') }, validShare: 0.02 },
  {
    method: 'POST',
    path: '/v1/devices',
    op: 'device.register',
    body: {
      schema: schemaRef('device-register-request'),
      overrides: () => ({ id: mostlyPool(() => [...pool.newIds, ...pool.registered.map((d) => d.id)], fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/)), claimCode: poolOr(() => pool.codes, fc.string({ minLength: 8, maxLength: 64 })) }),
    },
  },
  {
    method: 'POST',
    path: '/v1/devices/import',
    op: 'device.register',
    query: DEVICE_IMPORT_QUERY,
    body: {
      schema: schemaRef('device-import-request'),
      overrides: () => ({
        'devices[]': fc.oneof(
          { weight: 4, arbitrary: arbs.valid(`${schemaRef('device-import-request')}#/definitions/ImportRow`, { overrides: { id: mostlyPool(() => pool.importIds, fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/)) } }) },
          { weight: 1, arbitrary: anyObject },
        ),
      }),
    },
    csv: true,
    importResult: true,
  },
];

// ------------------------------------------------------------- generation

/** Path parameter values that are not ids: odd characters, encodings, very long. */
const oddParam = fc.oneof(
  fc.constantFrom(' ', 'a b', '..', '.', '-x', '_x', 'é', '😀', 'a/b', 'a\\b', 'a\u0000b', '<x>', "'", '"', '%', '%zz', '%2e%2e', 'A'.repeat(65), 'a;b', 'a,b', 'a+b', 'a=b', '~x', '*'),
  fc.string({ minLength: 65, maxLength: 3000 }),
  fc.string({ maxLength: 20, unit: 'binary' }),
  fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/).map((s) => `${s}\n`),
);

/**
 * The body is read before the parameters and the query are validated: a body the JSON parser
 * refuses answers first. Free-form data (profile item data) may hold a __proto__ or constructor
 * key, which Fastify's parser refuses as a prototype-pollution attempt (MALFORMED_JSON).
 */
function parserRefusals(request: { headers: Record<string, string>; payload?: string | Buffer }): string[] {
  return typeof request.payload === 'string' && /"(?:__proto__|constructor)"\s*:/.test(request.payload) ? ['MALFORMED_JSON'] : [];
}

/** encodeURIComponent, also for strings with lone surrogates (their UTF-8 replacement character). */
function encode(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    return [...Buffer.from(s, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');
  }
}

/** A param value in the URL: percent-encoded, or raw when it is printable ASCII without ? or #. */
const encodeParam = (value: string, raw: boolean) => (raw && /^[\x21-\x7e]*$/.test(value) && !/[?#/]/.test(value) ? value : encode(value));

function queryString(q: unknown): string {
  if (q === null || typeof q !== 'object' || Array.isArray(q)) return `?q=${encode(toJsonText(q))}`;
  const parts: string[] = [];
  for (const [k, v] of Object.entries(q)) {
    const values = Array.isArray(v) ? v : [v];
    for (const one of values) parts.push(`${encode(k)}=${encode(typeof one === 'string' ? one : toJsonText(one))}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

/** The query object Fastify parses from `qs` (repeated keys become arrays). */
function parsedQuery(qs: string): Record<string, unknown> {
  const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [k, v] of new URLSearchParams(qs)) {
    const prev = out[k];
    Object.defineProperty(out, k, { value: prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v], enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Query strings the route does not define, or with odd encodings. */
const junkQuery = fc.oneof(
  fc.constantFrom('?x=1', '?__proto__=1', '?constructor[prototype][x]=1', '?a=%zz', '?&&&', '?=', '?limit=1&limit=2', '?' + 'k'.repeat(5000) + '=v', '?state=%00', '?q=😀'),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 30 }), { maxKeys: 4 }).map((d) => queryString(d)),
);

const WRONG_TYPES = ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'image/png', 'application/jsonx', 'application/octet-stream'];

function caseArbitrary(spec: RouteSpec, allowed: readonly Role[], forbidden: readonly Role[], existing: readonly Method[]): fc.Arbitrary<HttpCase> {
  const paramSchema = spec.param ? arbs.locate(spec.param.schema) : undefined;
  const paramValid = paramSchema ? arbs.validator(paramSchema) : undefined;
  const validParam: fc.Arbitrary<string> = spec.param
    ? poolOr(spec.param.pool, arbs.valid(spec.param.schema).map((p) => (p as { id: string }).id))
    : fc.constant('');
  const urlOf = (param: string, raw = false) => (spec.param ? spec.path.replace(':id', encodeParam(param, raw)) : spec.path);
  const querySchema = spec.query ? arbs.locate(spec.query) : undefined;
  const queryValid = querySchema ? arbs.validator(querySchema) : undefined;
  const validQuery = spec.query ? arbs.valid(spec.query).map(queryString) : fc.constant('');
  const keyOf = (role: Role, tenant: TenantKeys = ts.keys) => tenant[role];
  const rightKey = allowed.length ? fc.constantFrom(...allowed).map((r) => keyOf(r)) : fc.constant(ts.keys.viewer);
  const bodySpec = spec.body && spec.body !== 'none' ? spec.body : undefined;
  const bodyOptions = { overrides: bodySpec?.overrides?.() ?? {}, hugeLength: HUGE, ...(bodySpec?.arrayExtra !== undefined ? { arrayExtra: bodySpec.arrayExtra } : {}) };
  const validBody: fc.Arbitrary<unknown> = bodySpec ? arbs.valid(bodySpec.schema, bodyOptions) : fc.constant({});
  const json = (headers: Record<string, string>, body: unknown) => ({ headers: { ...headers, 'content-type': 'application/json' }, payload: toJsonText(body) });
  const withBody = spec.method !== 'GET' && spec.method !== 'DELETE';
  const sendsBody = withBody && spec.body !== undefined;
  const any = 'any' as const;

  // right key, valid everything (may still be refused: unknown ids, states, duplicates)
  const valid = fc.record({ key: rightKey, param: validParam, query: validQuery, body: validBody, head: fc.boolean(), bare: fc.boolean() }).map((r): HttpCase => {
    const method: Method = spec.method === 'GET' && r.head && !spec.sse ? 'HEAD' : spec.method;
    const headers = auth(r.key);
    const base = { kind: method === 'HEAD' ? 'valid HEAD' : 'valid', method, url: urlOf(r.param) + r.query, expect: any, socket: !!spec.sse };
    if (!sendsBody) return { ...base, headers };
    if (bodySpec?.optional && r.bare) return { ...base, kind: 'valid without body', headers };
    return { ...base, ...json(headers, r.body) };
  });
  // another tenant's key with the right role: its own tenant, so mostly "not found"
  const crossTenant = fc.record({ param: validParam, body: validBody, role: allowed.length ? fc.constantFrom(...allowed) : fc.constant<Role>('viewer') }).map(
    (r): HttpCase => ({ kind: 'other tenant', method: spec.method, url: urlOf(r.param), ...(sendsBody ? json(auth(keyOf(r.role, other)), r.body) : { headers: auth(keyOf(r.role, other)) }), expect: any, socket: !!spec.sse }),
  );

  const cases: { weight: number; arbitrary: fc.Arbitrary<HttpCase> }[] = [];
  const share = spec.validShare ?? 0.15;
  cases.push({ weight: Math.round(share * 90), arbitrary: valid }, { weight: Math.max(1, Math.round(share * 10)), arbitrary: crossTenant });

  if (spec.op) {
    const rejectAuth = (kind: string, header: fc.Arbitrary<string | undefined>, codes: string[], status: number) =>
      fc.record({ h: header, param: validParam, body: fc.oneof(validBody, fc.constant(undefined)) }).map((r): HttpCase => {
        const headers: Record<string, string> = r.h === undefined ? {} : { authorization: r.h };
        const body = sendsBody && r.body !== undefined ? json(headers, r.body) : { headers };
        return { kind, method: spec.method, url: urlOf(r.param), ...body, expect: { codes, status } };
      });
    const wellFormedUnknown = fc.stringMatching(/^pdk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    const rightIdWrongSecret = fc.stringMatching(/^[A-Za-z0-9_-]{43}$/).map((s) => `${ts.keys.admin.slice(0, 21)}${s}`);
    cases.push(
      { weight: 6, arbitrary: rejectAuth('no key', fc.constant(undefined), ['AUTH_REQUIRED'], 401) },
      {
        weight: 6,
        arbitrary: rejectAuth(
          'malformed Authorization',
          fc.oneof(fc.constantFrom('Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', 'Token abc', 'Bearer a b', `Bearer ${ts.keys.admin} x`, ts.keys.admin, 'Bearer\t', 'Digest x'), fc.string({ maxLength: 40, unit: 'grapheme-ascii' }).filter((s) => !/^Bearer\s+\S+$/i.test(s.trim()) && s.trim() === s && s.length > 0)),
          ['AUTH_INVALID', 'AUTH_REQUIRED'],
          401,
        ),
      },
      {
        weight: 6,
        arbitrary: rejectAuth(
          'wrong key',
          fc.oneof(wellFormedUnknown, rightIdWrongSecret, fc.string({ minLength: 1, maxLength: 80, unit: 'grapheme-ascii' }).filter((s) => /^\S+$/.test(s)), fc.constant('x'.repeat(8000))).map((k) => `Bearer ${k}`),
          ['AUTH_INVALID'],
          401,
        ),
      },
    );
    if (forbidden.length) cases.push({ weight: 6, arbitrary: rejectAuth('role without the right', fc.constantFrom(...forbidden).map((r) => `Bearer ${keyOf(r)}`), ['ROLE_FORBIDDEN'], 403) });
  } else {
    // public: any Authorization header is ignored
    cases.push({ weight: 6, arbitrary: fc.oneof(fc.constant('Bearer nope'), fc.string({ maxLength: 40, unit: 'grapheme-ascii' })).map((h): HttpCase => ({ kind: 'public with junk auth', method: spec.method, url: spec.path, headers: { authorization: h }, expect: any })) });
  }

  if (spec.param && paramValid) {
    cases.push({
      weight: 12,
      arbitrary: fc.record({ key: rightKey, value: oddParam, raw: fc.boolean(), body: validBody }).map((r): HttpCase => {
        const encoded = encodeParam(r.value, r.raw);
        let decoded: string | undefined;
        try {
          decoded = decodeURIComponent(encoded);
        } catch {
          decoded = undefined;
        }
        // "." and ".." segments (also as %2e) are resolved by the URL parser: another route answers
        const dotSegment = /^(?:\.|%2e){1,2}$/i.test(encoded);
        const mustReject = !dotSegment && (decoded === undefined || !paramValid({ id: decoded }) || encoded.length > 100);
        const headers = auth(r.key);
        const request = sendsBody ? json(headers, r.body) : { headers };
        return { kind: 'odd path parameter', method: spec.method, url: urlOf(r.value, r.raw), ...request, expect: mustReject ? { codes: [...PARAM_CODES, ...parserRefusals(request)] } : any, socket: !!spec.sse && !mustReject };
      }),
    });
  }

  if (queryValid) {
    cases.push({
      weight: 12,
      arbitrary: fc.record({ key: rightKey, param: validParam, body: validBody, q: fc.oneof(arbs.invalid(spec.query!).map((m) => queryString(m.value)), junkQuery) }).map((r): HttpCase => {
        const mustReject = !queryValid(parsedQuery(r.q.slice(1)));
        const request = sendsBody ? json(auth(r.key), r.body) : { headers: auth(r.key) };
        const parser = parserRefusals(request);
        return { kind: 'bad query', method: spec.method, url: urlOf(r.param) + r.q, ...request, expect: mustReject ? { codes: ['INVALID_QUERY', ...parser], ...(parser.length ? {} : { status: 400 }) } : any, socket: !!spec.sse && !mustReject };
      }),
    });
  } else {
    cases.push({
      weight: 4,
      arbitrary: fc.record({ key: rightKey, param: validParam, body: validBody, q: junkQuery }).map(
        (r): HttpCase => ({ kind: 'ignored query', method: spec.method, url: urlOf(r.param) + r.q, ...(sendsBody ? json(auth(r.key), r.body) : { headers: auth(r.key) }), expect: any, socket: !!spec.sse }),
      ),
    });
  }

  if (bodySpec) {
    cases.push({
      weight: 40,
      arbitrary: fc.record({ key: rightKey, param: validParam, m: arbs.invalid(bodySpec.schema, bodyOptions) }).map(
        // (null is what an optional body may be: it reads as no body)
        (r): HttpCase => ({ kind: `body: ${r.m.mutation}`, method: spec.method, url: urlOf(r.param), ...json(auth(r.key), r.m.value), expect: bodySpec.optional && r.m.value === null ? any : { codes: BODY_CODES } }),
      ),
    });
  }
  if (sendsBody) {
    const raw = rawJsonVariants(validBody);
    cases.push(
      {
        weight: 12,
        arbitrary: fc.record({ key: rightKey, param: validParam, v: raw }).map((r): HttpCase => {
          // a route without a body schema takes any JSON; a body it does not read is only parsed
          const mustReject = r.v.mustReject && !(spec.body === 'none' && r.v.mutation === 'not an object') && !(bodySpec?.optional && r.v.mutation === 'not an object' && r.v.body === 'null');
          return { kind: `raw body: ${r.v.mutation}`, method: spec.method, url: urlOf(r.param), headers: { ...auth(r.key), 'content-type': 'application/json' }, payload: r.v.body, expect: mustReject ? { codes: BODY_CODES } : any };
        }),
      },
      {
        weight: 6,
        arbitrary: fc.record({ key: rightKey, param: validParam, body: validBody, type: fc.constantFrom(...WRONG_TYPES) }).map(
          (r): HttpCase => ({
            kind: `content-type ${r.type}`,
            method: spec.method,
            url: urlOf(r.param),
            headers: { ...auth(r.key), 'content-type': r.type },
            payload: toJsonText(r.body),
            // text/plain is parsed as a string: a route without a body schema takes it
            expect: spec.body === 'none' && r.type === 'text/plain' ? any : spec.csv && r.type === 'text/plain' ? any : { codes: BODY_CODES },
          }),
        ),
      },
      {
        weight: 3,
        arbitrary: fc.record({ key: rightKey, param: validParam, body: validBody, delta: fc.integer({ min: -50, max: 50 }).filter((d) => d !== 0) }).map((r): HttpCase => {
          const payload = toJsonText(r.body);
          return {
            kind: 'content-length mismatch',
            method: spec.method,
            url: urlOf(r.param),
            headers: { ...auth(r.key), 'content-type': 'application/json', 'content-length': String(Math.max(0, Buffer.byteLength(payload) + r.delta)) },
            payload,
            expect: { codes: [...BODY_CODES, 'BAD_REQUEST'] },
          };
        }),
      },
    );
    if (!bodySpec?.optional && spec.body !== 'none') {
      cases.push({ weight: 2, arbitrary: fc.record({ key: rightKey, param: validParam }).map((r): HttpCase => ({ kind: 'no body', method: spec.method, url: urlOf(r.param), headers: auth(r.key), expect: { codes: BODY_CODES } })) });
    }
  }
  if (spec.csv) {
    cases.push({ weight: 20, arbitrary: fc.record({ key: rightKey, q: validQuery, csv: csvBody }).map((r): HttpCase => ({ kind: 'csv', method: spec.method, url: urlOf('') + r.q, headers: { ...auth(r.key), 'content-type': 'text/csv' }, payload: r.csv, expect: any })) });
  }
  const otherMethods = (['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const).filter((m) => !existing.includes(m));
  if (otherMethods.length) {
    cases.push({
      weight: 2,
      arbitrary: fc.record({ method: fc.constantFrom(...otherMethods), key: rightKey, param: validParam }).map((r): HttpCase => {
        const url = urlOf(r.param);
        // another route may take this method and URL (GET /v1/devices/import is GET /v1/devices/:id)
        return { kind: 'unrouted method', method: r.method, url, headers: auth(r.key), expect: routed(r.method, url) ? any : { codes: ['NOT_FOUND'], status: 404 } };
      }),
    });
  }
  return fc.oneof(...cases.filter((c) => c.weight > 0));
}

/** CSV uploads: the header, quoting, line ends, BOM, unknown or missing columns, odd cells. */
const csvCell = fc.oneof(
  fc.constantFrom(...pool.importIds.slice(0, 10), 'thermostat', 'camera', 'fuzz-csv-code-123', ''),
  fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,12}$/),
  fc.string({ maxLength: 20 }),
  fc.constantFrom('"quoted, cell"', '"unclosed', 'a"b', '""', '"a""b"', '=cmd|x', ' padded '),
);
const csvBody = fc
  .record({
    header: fc.oneof({ weight: 6, arbitrary: fc.constantFrom('id,model', 'id,model,claimCode', 'model,id', 'ID,Model') }, { weight: 1, arbitrary: fc.constantFrom('', 'id', 'id,model,extra', 'id,,model', '"id",model') }),
    rows: fc.array(fc.array(csvCell, { minLength: 1, maxLength: 4 }), { maxLength: 6 }),
    eol: fc.constantFrom('\n', '\r\n', '\r'),
    bom: fc.boolean(),
  })
  .map((r) => `${r.bom ? '\ufeff' : ''}${[r.header, ...r.rows.map((cells) => cells.join(','))].join(r.eol)}`);

// ---------------------------------------------------------------- running

interface Answer {
  status: number;
  headers: Record<string, unknown>;
  body: string;
}

async function send(c: HttpCase): Promise<Answer> {
  if (c.socket) {
    // an SSE stream: read the head, then hang up
    const ac = new AbortController();
    const res = await fetch(`${ts.running.httpUrl}${c.url}`, { method: c.method, headers: c.headers, signal: ac.signal });
    const headers = Object.fromEntries(res.headers.entries());
    const body = res.status >= 400 ? await res.text() : '';
    ac.abort();
    return { status: res.status, headers, body };
  }
  const res = await ts.running.api.inject({ method: c.method, url: c.url, headers: c.headers, ...(c.payload !== undefined ? { payload: c.payload } : {}) } as InjectOptions);
  return { status: res.statusCode, headers: res.headers, body: res.body };
}

/** Every `code` inside a JSON value (error bodies, per-row and per-item results). */
function codesIn(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) codesIn(v, out);
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'code' && typeof v === 'string') out.push(v);
      else codesIn(v, out);
    }
  }
  return out;
}

function check(spec: RouteSpec, c: HttpCase, res: Answer): void {
  const fail = (why: string) => {
    throw new Error(`${spec.method} ${spec.path}: ${why}\n  case: ${c.kind} ${c.method} ${brief(c.url, 200)} ${brief(c.headers, 200)} body ${brief(c.payload ?? '', 400)}\n  answer: ${res.status} ${brief(res.body, 400)}`);
  };
  if (res.status >= 500) fail(`answered ${res.status}`);
  const type = String(res.headers['content-type'] ?? '');
  let body: unknown;
  if (c.method !== 'HEAD' && type.includes('application/json')) {
    try {
      body = JSON.parse(res.body);
    } catch {
      fail('a JSON content type with a body that is not JSON');
    }
  }
  if (res.status >= 400 && c.method !== 'HEAD') {
    if (spec.importResult && res.status === 422) {
      const result = body as { imported?: boolean; rows?: unknown[] };
      if (result?.imported !== false || !Array.isArray(result.rows)) fail('a 422 import answer that is not a device-import-result');
    } else {
      const err = body as ErrorBody | undefined;
      if (!err || typeof err.code !== 'string' || typeof err.message !== 'string' || err.statusCode !== res.status) fail('an error without a schemas/error.json body');
      if (!documented.has(err!.code)) fail(`undocumented error code ${err!.code}`);
    }
  }
  for (const code of codesIn(body)) if (!documented.has(code)) fail(`undocumented code ${code} in the answer`);
  if (c.expect !== 'any') {
    if (res.status < 400) fail(`accepted input that must be refused (${c.expect.codes.join('|')})`);
    if (c.expect.status !== undefined && res.status !== c.expect.status) fail(`status ${res.status}, expected ${c.expect.status}`);
    const code = (body as { code?: string } | undefined)?.code;
    if (c.method !== 'HEAD' && !c.expect.codes.includes(code ?? '')) fail(`code ${code}, expected ${c.expect.codes.join('|')}`);
  }
}

/** Cases between two digests when no case called a writing method of the store. */
const PERIODIC = 250;

async function fuzzRoute(spec: RouteSpec, runs: number): Promise<{ counts: Record<string, number>; statuses: Record<string, number>; digests: number }> {
  const allowed = spec.op ? ROLES.filter((r) => roleAllows(r, spec.op!)) : [];
  const forbidden = spec.op ? ROLES.filter((r) => !roleAllows(r, spec.op!)) : [];
  const existing = routes.filter((r) => r.path === spec.path).map((r) => r.method);
  const arb = caseArbitrary(spec, allowed, forbidden, existing);
  const counts: Record<string, number> = {};
  const statuses: Record<string, number> = {};
  let digests = 1;
  let quiet: string[] = [];
  await watch.reset();
  await fc.assert(
    fc.asyncProperty(arb, async (c) => {
      const kind = c.kind.replace(/ at .*$/, '');
      counts[kind] = (counts[kind] ?? 0) + 1;
      const writes = watch.writes;
      const audits = watch.successAudits;
      const res = await send(c);
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      check(spec, c, res);
      const rejected = res.status >= 400;
      const what = () => `${c.kind} ${c.method} ${brief(c.url, 160)} ${brief(c.payload ?? '', 300)} -> ${res.status} ${brief(res.body)}`;
      if (rejected && watch.successAudits !== audits) throw new Error(`${spec.method} ${spec.path}: a rejected request recorded a success in the audit log: ${what()}`);
      if (watch.writes !== writes) {
        // it called the store to write: compare the whole store (rejected), or take it as the new reference
        digests++;
        if (spec.readOnly || rejected) await watch.expectUnchanged(what);
        else await watch.reset();
        quiet = [];
      } else {
        quiet.push(`${c.kind} ${c.method} ${brief(c.url, 120)} -> ${res.status}`);
        if (quiet.length >= PERIODIC) {
          digests++;
          const batch = quiet;
          quiet = [];
          await watch.expectUnchanged(() => `${spec.method} ${spec.path}, one of ${batch.length} cases that wrote nothing:\n${batch.slice(-20).join('\n')}`);
        }
      }
    }),
    fuzzParams(runs),
  );
  await watch.expectUnchanged(() => `${spec.method} ${spec.path}: the last ${quiet.length} cases`);
  return { counts, statuses, digests };
}

/** Whether some route of the app takes this method and path. */
function routed(method: Method, url: string): boolean {
  const path = url.split('?')[0]!;
  return routes.some((r) => r.method === method && new RegExp(`^${r.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:id/g, '[^/]+')}$`).test(path));
}

/** The running app's routes, from printRoutes() (HEAD routes come with their GET). */
let routes: { method: Method; path: string }[] = [];
function appRoutes(): { method: Method; path: string }[] {
  const out: { method: Method; path: string }[] = [];
  const stack: { depth: number; path: string }[] = [];
  for (const line of ts.running.api.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│\s]*)[├└]── (\S+)(?: \(([^)]*)\))?/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length;
    while (stack.length && stack[stack.length - 1]!.depth >= depth) stack.pop();
    const path = (stack.length ? stack[stack.length - 1]!.path : '') + m[2]!;
    stack.push({ depth, path });
    for (const method of (m[3] ?? '').split(',').map((s) => s.trim()).filter(Boolean)) out.push({ method: method as Method, path });
  }
  return out;
}

describe('HTTP fuzzing', () => {
  it('every route of the running app has a fuzz spec', () => {
    routes = appRoutes();
    expect(routes.length).toBeGreaterThan(20);
    const specs = new Set(ROUTES.map((s) => `${s.method} ${s.path}`));
    const missing = routes.filter((r) => r.method !== 'HEAD' && !specs.has(`${r.method} ${r.path}`)).map((r) => `${r.method} ${r.path}`);
    expect(missing, 'routes without a fuzz spec in test/fuzz/http-routes.test.ts').toEqual([]);
    // HEAD is fuzzed with its GET
    expect(routes.filter((r) => r.method === 'HEAD' && !specs.has(`GET ${r.path}`))).toEqual([]);
  });

  for (const spec of ROUTES) {
    it(`${spec.method} ${spec.path}`, async ({ skip }) => {
      if (routes.length === 0) routes = appRoutes();
      if (!routes.some((r) => r.method === spec.method && r.path === spec.path)) return skip(`${spec.method} ${spec.path} is not served (yet)`);
      const runs = FUZZ_RUNS;
      const { counts, statuses, digests } = await fuzzRoute(spec, runs);
      if (process.env.PROVISIOND_FUZZ_VERBOSE) process.stderr.write(`${spec.method} ${spec.path}: ${digests} digests ${JSON.stringify(statuses)} ${JSON.stringify(counts)}\n`);
      // the service is still up and answers
      expect((await ts.running.api.inject({ url: '/healthz' })).statusCode).toBe(200);
    }, fuzzTimeout(3));
  }

  it('regression: a claim of a device claimed already stores nothing (it used to store a bootstrap token)', async () => {
    const code = 'regression-claimed-twice';
    expect((await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(ts.keys.factory), payload: { id: 'fz-twice', model: 'thermostat', claimCode: code } })).statusCode).toBe(201);
    expect((await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: code, owner: 'o', site: 's' } })).statusCode).toBe(201);
    await watch.reset();
    for (let i = 0; i < 3; i++) {
      const res = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: code, owner: 'o', site: 's' } });
      expect(res.json()).toMatchObject({ code: 'DEVICE_ALREADY_CLAIMED' });
    }
    await watch.expectUnchanged(() => 'claims of a claimed device');
  });

  it('regressions: router errors, content-length mismatches, deep profile data', async () => {
    const h = auth(ts.keys.factory);
    const cases: [InjectOptions, number, string][] = [
      // FST_ERR_MAX_PARAM_LENGTH and FST_ERR_BAD_URL used to leave as Fastify's own bodies (414 / 400, undocumented codes)
      [{ method: 'GET', url: `/v1/devices/${'a'.repeat(101)}`, headers: h }, 400, 'INVALID_PARAMS'],
      [{ method: 'GET', url: '/v1/devices/%zz', headers: h }, 400, 'INVALID_PARAMS'],
      [{ method: 'GET', url: '/v1/%E0%A4%A', headers: h }, 400, 'INVALID_PARAMS'],
      // a body that does not match its Content-Length: BAD_REQUEST, now documented
      [{ method: 'POST', url: '/v1/devices', headers: { ...h, 'content-type': 'application/json', 'content-length': '5' }, payload: '{"a":1}' }, 400, 'BAD_REQUEST'],
      // profile item data nested 5,000 levels: its JSON.stringify in the store overflowed the stack (503 STORE_UNAVAILABLE)
      [
        {
          method: 'PUT',
          url: '/v1/profiles/fz-deep',
          headers: { ...auth(ts.keys.admin), 'content-type': 'application/json' },
          payload: `{"name":"deep","items":[{"id":"x","type":"custom","required":false,"priority":1,"await":false,"data":${'{"a":'.repeat(5000)}{}${'}'.repeat(5000)}}]}`,
        },
        400,
        'PROFILE_INVALID',
      ],
    ];
    for (const [req, status, code] of cases) {
      const res = await ts.running.api.inject(req);
      expect(res.statusCode, res.body).toBe(status);
      expect(res.json()).toMatchObject({ statusCode: status, code });
      expect(documented.has(code)).toBe(true);
    }
  });
});
