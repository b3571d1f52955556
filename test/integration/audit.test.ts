/**
 * The audit log on real parts: every identity action (claim, issuance over MQTT, EST and the
 * factory line, renewal, revoke, release, re-provision, decommission, bootstrap reissue, key
 * generation, API key creation and revocation) leaves one entry with the right actor, tenant,
 * target and outcome; refused actions are recorded with their error code; GET /v1/audit keeps
 * tenants apart; and an action whose entry cannot be written fails (fail-closed), loudly.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { AuditEntry, ClaimResponse } from '../../schemas/types.js';
import { loadConfig } from '../../src/config/index.js';
import { startService } from '../../src/main.js';
import { createAjv, getValidator } from '../../src/schemas.js';
import { estSimpleEnroll } from '../helpers/bootstrap.js';
import { NETWORK, connectBootstrap, corruptSignature, nextJson, opensslCsr } from '../helpers/device.js';
import { startTestService, type TenantKeys, type TestService } from '../helpers/service.js';

let ts: TestService;
let acme: TenantKeys;
let beta: TenantKeys;
const sims: SimDevice[] = [];

const keyId = (secret: string) => secret.split('_')[1]!;
const actorOf = (secret: string) => `apikey:${keyId(secret)}`;

async function api<T = Record<string, unknown>>(method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, key: string, payload?: unknown) {
  const res = await ts.running.api.inject({ method, url, headers: { authorization: `Bearer ${key}` }, ...(payload !== undefined ? { payload: payload as object } : {}) });
  return { status: res.statusCode, body: (res.body ? res.json() : undefined) as T };
}

async function audit(key: string, query = ''): Promise<{ items: AuditEntry[]; next?: string }> {
  const res = await api<{ items: AuditEntry[]; next?: string }>('GET', `/v1/audit${query ? `?${query}` : ''}`, key);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}

/** Every entry of the store (newest first), read directly. */
async function everything(): Promise<AuditEntry[]> {
  return (await ts.running.store.listAudit({ limit: 100_000 })).entries;
}

/** The newest entry of `action` about `deviceId`. */
async function latest(action: AuditEntry['action'], filter: { deviceId?: string; outcome?: AuditEntry['outcome']; target?: string } = {}): Promise<AuditEntry> {
  const found = (await everything()).find(
    (e) =>
      e.action === action &&
      (filter.deviceId === undefined || e.deviceId === filter.deviceId) &&
      (filter.outcome === undefined || e.outcome === filter.outcome) &&
      (filter.target === undefined || e.target === filter.target),
  );
  if (!found) throw new Error(`no ${action} entry for ${JSON.stringify(filter)}`);
  return found;
}

let n = 0;
async function registerIn(keys: TenantKeys, model = 'thermostat') {
  const id = `aud-${++n}-${Date.now().toString(36)}`;
  const claimCode = `code-${id}-0123456789`;
  const res = await api('POST', '/v1/devices', keys.factory, { id, model, claimCode });
  expect(res.status).toBe(201);
  return { id, claimCode };
}

async function claimIn(keys: TenantKeys, claimCode: string, deviceId?: string) {
  return api<ClaimResponse>('POST', '/v1/claims', keys.installer, { claimCode, owner: 'alice', site: 'home', network: NETWORK, ...(deviceId ? { deviceId } : {}) });
}

async function provisionedIn(keys: TenantKeys) {
  const { id, claimCode } = await registerIn(keys);
  const claimed = await claimIn(keys, claimCode);
  expect(claimed.status).toBe(201);
  const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: claimed.body.bootstrap! });
  sims.push(device);
  await device.run();
  return { id, claimCode, device, bootstrap: claimed.body.bootstrap! };
}

beforeAll(async () => {
  ts = await startTestService();
  acme = await ts.tenant('acme');
  beta = await ts.tenant('beta');
});
afterAll(async () => {
  await Promise.all(sims.map((d) => d.stop()));
  await ts?.stop();
});

describe('audit entries of identity actions', () => {
  it('key generation at first start: the CA and service keys and the secrets, by the system, in the service tenant', async () => {
    const keys = (await everything()).filter((e) => e.action === 'key.generate' && e.actor === 'system');
    expect(keys.map((e) => e.target).sort()).toStrictEqual(
      ['ca/config-signer.key', 'ca/issuing.key', 'ca/mqtt-server.key', 'ca/root.key', 'secrets/bootstrap-token-key', 'secrets/claim-code-pepper', 'secrets/network-secret-key']
        .map((f) => `key:${f}`)
        .sort(),
    );
    for (const e of keys) {
      expect(e).toMatchObject({ tenantId: 'default', outcome: 'success', details: { encrypted: false } });
    }
  });

  it('claim: success by the installer key; a refused claim with its code (and never the claim code itself)', async () => {
    const { id, claimCode } = await registerIn(acme);
    const wrong = await claimIn(acme, 'definitely-not-the-code-42', id);
    expect(wrong.status).toBe(403);
    const refused = await latest('device.claim', { deviceId: id, outcome: 'failure' });
    expect(refused).toMatchObject({ tenantId: 'acme', actor: actorOf(acme.installer), errorCode: 'CLAIM_CODE_INVALID' });

    const ok = await claimIn(acme, claimCode);
    expect(ok.status).toBe(201);
    const entry = await latest('device.claim', { deviceId: id, outcome: 'success' });
    expect(entry).toMatchObject({ tenantId: 'acme', actor: actorOf(acme.installer), details: { profileId: 'default' } });
    expect(entry.errorCode).toBeUndefined();

    const again = await claimIn(acme, claimCode);
    expect(again.status).toBe(409);
    expect(await latest('device.claim', { deviceId: id, outcome: 'failure' })).toMatchObject({ errorCode: 'DEVICE_ALREADY_CLAIMED' });

    const all = JSON.stringify(await everything());
    expect(all).not.toContain(claimCode);
    expect(all).not.toContain('definitely-not-the-code-42');
    expect(all).not.toContain(ok.body.bootstrap!.token);
    expect(all).not.toContain(NETWORK.wifi.secret!);
  });

  it('issuance over MQTT by the device, renewal, and a rejected CSR with its error code', async () => {
    const { id, device } = await provisionedIn(acme);
    const first = device.certificatePem;
    const issue = await latest('certificate.issue', { deviceId: id, outcome: 'success' });
    const serial = (await ts.running.store.getDevice(id))!.certificateSerial!;
    expect(issue).toMatchObject({ tenantId: 'acme', actor: `device:${id}`, serial, details: { channel: 'mqtt' } });

    await device.renew();
    expect(device.certificatePem).not.toBe(first);
    const renewed = (await ts.running.store.getDevice(id))!.certificateSerial!;
    expect(await latest('certificate.renew', { deviceId: id })).toMatchObject({
      tenantId: 'acme',
      actor: `device:${id}`,
      outcome: 'success',
      serial: renewed,
      details: { channel: 'mqtt', replaces: serial },
    });

    // a CSR whose signature does not verify, on a bootstrap session
    const other = await registerIn(acme);
    const claimed = await claimIn(acme, other.claimCode);
    const client = await connectBootstrap(ts, claimed.body.bootstrap!);
    try {
      await client.subscribeAsync(`devices/${other.id}/csr/rejected`, { qos: 1 });
      const rejected = nextJson(client, `devices/${other.id}/csr/rejected`);
      await client.publishAsync(`devices/${other.id}/csr`, JSON.stringify({ requestId: 'r1', csr: corruptSignature(opensslCsr().csrPem) }), { qos: 1 });
      expect(await rejected).toMatchObject({ code: 'CSR_SIGNATURE_INVALID' });
    } finally {
      await client.endAsync();
    }
    expect(await latest('certificate.issue', { deviceId: other.id, outcome: 'failure' })).toMatchObject({
      tenantId: 'acme',
      actor: `device:${other.id}`,
      errorCode: 'CSR_SIGNATURE_INVALID',
      details: { channel: 'mqtt' },
    });
  });

  it('issuance over EST and on the factory line (CSR and server-side key generation)', async () => {
    const { id, claimCode } = await registerIn(acme);
    const claimed = await claimIn(acme, claimCode);
    const est = await estSimpleEnroll(ts.running.estPort!, claimed.body.bootstrap!, opensslCsr().csrPem);
    expect(est.status).toBe(200);
    expect(await latest('certificate.issue', { deviceId: id })).toMatchObject({ actor: `device:${id}`, outcome: 'success', tenantId: 'acme', details: { channel: 'est' } });

    const line = await registerIn(acme);
    const res = await api<{ results: { serial?: string; status: string }[] }>('POST', '/v1/factory/certificates', acme.factory, {
      devices: [
        { deviceId: line.id, csr: opensslCsr().csrPem },
        { deviceId: 'not-registered-here', csr: opensslCsr().csrPem },
      ],
    });
    expect(res.body.results.map((r) => r.status)).toStrictEqual(['issued', 'failed']);
    expect(await latest('certificate.issue', { deviceId: line.id })).toMatchObject({
      actor: actorOf(acme.factory),
      outcome: 'success',
      serial: res.body.results[0]!.serial,
      details: { channel: 'factory' },
    });
    expect(await latest('certificate.issue', { deviceId: 'not-registered-here' })).toMatchObject({
      tenantId: 'acme',
      actor: actorOf(acme.factory),
      outcome: 'failure',
      errorCode: 'DEVICE_NOT_FOUND',
    });

    // server-side key generation: refused while the tenant does not allow it, then a key.generate with the issuance
    const bundled = await registerIn(acme);
    expect((await api('POST', '/v1/factory/bundles', acme.factory, { devices: [bundled.id] })).status).toBe(403);
    expect(await latest('key.generate', { outcome: 'failure' })).toMatchObject({ tenantId: 'acme', errorCode: 'SERVER_KEYGEN_DISABLED' });
    expect((await api('PATCH', '/v1/tenant', acme.admin, { serverKeyGeneration: true })).status).toBe(200);
    const bundles = await api<{ results: { status: string; serial: string; password: string; pkcs12: string }[] }>('POST', '/v1/factory/bundles', acme.factory, { devices: [bundled.id] });
    expect(bundles.body.results[0]!.status).toBe('issued');
    const generated = await latest('key.generate', { deviceId: bundled.id });
    expect(generated).toMatchObject({ tenantId: 'acme', actor: actorOf(acme.factory), outcome: 'success', details: { channel: 'factory', keyType: 'P-256', kept: false } });
    expect(await latest('certificate.issue', { deviceId: bundled.id })).toMatchObject({ outcome: 'success', serial: bundles.body.results[0]!.serial });
    const all = JSON.stringify(await everything());
    expect(all).not.toContain(bundles.body.results[0]!.password);
    expect(all).not.toContain(bundles.body.results[0]!.pkcs12.slice(0, 64));
  });

  it('revoke, release, re-provision, decommission and bootstrap reissue: by whom, with the serial; refusals recorded', async () => {
    const revoked = await provisionedIn(acme);
    const serial = (await ts.running.store.getDevice(revoked.id))!.certificateSerial!;
    expect((await api('POST', `/v1/devices/${revoked.id}/revoke`, acme.admin, { reason: 'stolen' })).status).toBe(200);
    expect(await latest('device.revoke', { deviceId: revoked.id, outcome: 'success' })).toMatchObject({
      tenantId: 'acme',
      actor: actorOf(acme.admin),
      serial,
      details: { reason: 'stolen', revoked: serial, crlReason: 'keyCompromise' },
    });
    expect((await api('POST', `/v1/devices/${revoked.id}/revoke`, acme.admin)).status).toBe(409);
    expect(await latest('device.revoke', { deviceId: revoked.id, outcome: 'failure' })).toMatchObject({ errorCode: 'DEVICE_STATE_INVALID', actor: actorOf(acme.admin) });
    // a role that may not revoke is stopped before the use-case (ROLE_FORBIDDEN, no entry: nothing was attempted)
    expect((await api('POST', `/v1/devices/${revoked.id}/revoke`, acme.installer)).status).toBe(403);

    const released = await provisionedIn(acme);
    expect((await api('POST', `/v1/devices/${released.id}/release`, acme.installer)).status).toBe(200);
    expect(await latest('device.release', { deviceId: released.id })).toMatchObject({ actor: actorOf(acme.installer), outcome: 'success', details: { crlReason: 'affiliationChanged' } });

    const reprovisioned = await provisionedIn(acme);
    const before = (await ts.running.store.getDevice(reprovisioned.id))!.certificateSerial!;
    expect((await api('POST', `/v1/devices/${reprovisioned.id}/reprovision`, acme.installer)).status).toBe(201);
    expect(await latest('device.reprovision', { deviceId: reprovisioned.id })).toMatchObject({ actor: actorOf(acme.installer), outcome: 'success', serial: before, details: { revoked: before } });
    expect((await api('POST', `/v1/devices/${reprovisioned.id}/bootstrap`, acme.installer)).status).toBe(201);
    expect(await latest('bootstrap.reissue', { deviceId: reprovisioned.id })).toMatchObject({ actor: actorOf(acme.installer), outcome: 'success' });

    expect((await api('POST', `/v1/devices/${reprovisioned.id}/decommission`, acme.admin)).status).toBe(200);
    expect(await latest('device.decommission', { deviceId: reprovisioned.id })).toMatchObject({ actor: actorOf(acme.admin), outcome: 'success', tenantId: 'acme' });
    expect((await api('POST', `/v1/devices/${reprovisioned.id}/reprovision`, acme.installer)).status).toBe(409);
    expect(await latest('device.reprovision', { deviceId: reprovisioned.id, outcome: 'failure' })).toMatchObject({ errorCode: 'DEVICE_STATE_INVALID' });

    // another tenant's device: DEVICE_NOT_FOUND, recorded in the caller's tenant
    expect((await api('POST', `/v1/devices/${released.id}/revoke`, beta.admin)).status).toBe(404);
    expect(await latest('device.revoke', { deviceId: released.id, outcome: 'failure' })).toMatchObject({ tenantId: 'beta', actor: actorOf(beta.admin), errorCode: 'DEVICE_NOT_FOUND' });
  });

  it('API keys: creation (with the tenant) and revocation by the admin; revoking an unknown key is recorded as refused', async () => {
    const creating = await api<{ id: string; secret: string }>('POST', '/v1/admin/api-keys', acme.admin, { name: 'line 7', role: 'factory' });
    expect(creating.status).toBe(201);
    const target = `apikey:${creating.body.id}`;
    expect(await latest('apikey.create', { target })).toMatchObject({ tenantId: 'acme', actor: actorOf(acme.admin), outcome: 'success', details: { role: 'factory', name: 'line 7' } });
    expect((await api('DELETE', `/v1/admin/api-keys/${creating.body.id}`, acme.admin)).status).toBe(204);
    expect(await latest('apikey.revoke', { target })).toMatchObject({ tenantId: 'acme', actor: actorOf(acme.admin), outcome: 'success' });
    expect((await api('DELETE', `/v1/admin/api-keys/${creating.body.id}`, acme.admin)).status).toBe(404);
    expect(await latest('apikey.revoke', { target, outcome: 'failure' })).toMatchObject({ errorCode: 'API_KEY_NOT_FOUND' });
    // a tenant's first admin key, made when the service admin creates the tenant
    expect((await everything()).find((e) => e.action === 'apikey.create' && e.tenantId === 'beta' && e.details?.role === 'admin' && e.actor === actorOf(ts.keys.admin))).toBeDefined();
    expect(JSON.stringify(await everything())).not.toContain(creating.body.secret.slice('pdk_0123456789abcdef_'.length));
  });
});

describe('GET /v1/audit', () => {
  it("admins and viewers read their own tenant's log; only service admins read other tenants'; other roles are refused", async () => {
    const mine = await audit(acme.viewer, 'limit=1000');
    expect(mine.items.length).toBeGreaterThan(10);
    expect(new Set(mine.items.map((e) => e.tenantId))).toStrictEqual(new Set(['acme']));
    expect((await audit(acme.admin, 'limit=1000')).items).toStrictEqual(mine.items);
    expect((await audit(acme.admin, 'tenant=acme&limit=1000')).items).toStrictEqual(mine.items);

    const betaOwn = await audit(beta.admin, 'limit=1000');
    expect(betaOwn.items.every((e) => e.tenantId === 'beta')).toBe(true);
    for (const [key, query] of [
      [acme.viewer, 'tenant=beta'],
      [beta.admin, 'tenant=acme'],
      [beta.admin, 'tenant=default'],
      [ts.keys.viewer, 'tenant=acme'],
    ] as const) {
      const res = await api('GET', `/v1/audit?${query}`, key);
      expect(res.status, query).toBe(403);
      expect(res.body).toMatchObject({ code: 'ROLE_FORBIDDEN' });
    }
    for (const key of [acme.installer, acme.factory, acme.hub]) expect((await api('GET', '/v1/audit', key)).status).toBe(403);
    expect((await api('GET', '/v1/audit', 'pdk_0000000000000000_nope')).status).toBe(401);

    // the service admin: one tenant with ?tenant=, every tenant without
    expect((await audit(ts.keys.admin, 'tenant=acme&limit=1000')).items).toStrictEqual(mine.items);
    const every = await audit(ts.keys.admin, 'limit=1000');
    expect(new Set(every.items.map((e) => e.tenantId))).toStrictEqual(new Set(['default', 'acme', 'beta']));
    // a viewer of the service tenant sees the service tenant only
    expect(new Set((await audit(ts.keys.viewer, 'limit=1000')).items.map((e) => e.tenantId))).toStrictEqual(new Set(['default']));
  });

  it('filters (device, action, outcome, time) and pages newest first with next', async () => {
    const all = (await audit(acme.admin, 'limit=1000')).items;
    for (let i = 1; i < all.length; i++) expect(all[i - 1]!.at >= all[i]!.at).toBe(true);
    const failures = (await audit(acme.admin, 'outcome=failure&limit=1000')).items;
    expect(failures).toStrictEqual(all.filter((e) => e.outcome === 'failure'));
    const claims = (await audit(acme.admin, 'action=device.claim&limit=1000')).items;
    expect(claims).toStrictEqual(all.filter((e) => e.action === 'device.claim'));
    const device = claims[0]!.deviceId!;
    expect((await audit(acme.admin, `device=${device}&limit=1000`)).items).toStrictEqual(all.filter((e) => e.deviceId === device));
    const middle = all[Math.floor(all.length / 2)]!.at;
    const since = (await audit(acme.admin, `since=${encodeURIComponent(middle)}&limit=1000`)).items;
    expect(since).toStrictEqual(all.filter((e) => e.at >= middle));
    const until = (await audit(acme.admin, `until=${encodeURIComponent(middle)}&limit=1000`)).items;
    expect(until).toStrictEqual(all.filter((e) => e.at < middle));

    const paged: AuditEntry[] = [];
    let next: string | undefined;
    for (let pages = 0; pages < 1000; pages++) {
      const page: { items: AuditEntry[]; next?: string } = await audit(acme.admin, `limit=3${next ? `&before=${next}` : ''}`);
      paged.push(...page.items);
      next = page.next;
      if (!next) break;
    }
    expect(paged).toStrictEqual(all);

    for (const bad of ['limit=0', 'before=abc', 'since=yesterday', 'action=device.explode', 'tenant=../x', 'extra=1']) {
      expect((await api('GET', `/v1/audit?${bad}`, acme.admin)).status, bad).toBe(400);
    }
    // every entry written in this run matches schemas/audit-entry.json
    const validate = getValidator<AuditEntry>(createAjv(), 'audit-entry');
    for (const e of await everything()) expect(validate(e), `${JSON.stringify(e)}: ${JSON.stringify(validate.errors)}`).toBe(true);
  });
});

describe('fail-closed', () => {
  it('an action whose audit entry cannot be written fails with nothing changed; the missing entry is logged at error level', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'provisiond-audit-closed-'));
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
    const running = await startService(
      loadConfig({ env: {}, overrides: { dataDir, http: { host: '127.0.0.1', port: 0 }, mqtt: { host: '127.0.0.1', port: 0 }, est: { enabled: false } } }),
      { logger: pino({ level: 'info' }, sink) },
    );
    try {
      const admin = await running.apiKeys.create('default', 'admin', 'admin');
      const installer = await running.apiKeys.create('default', 'installer', 'installer');
      const inject = (method: 'POST', url: string, key: string, payload: object) =>
        running.api.inject({ method, url, headers: { authorization: `Bearer ${key}` }, payload });
      expect((await inject('POST', '/v1/devices', admin.secret, { id: 'closed-1', model: 'thermostat', claimCode: 'closed-code-0123456789' })).statusCode).toBe(201);

      // the audit table refuses every insert from now on (another writer on the file)
      const db = new Database(join(dataDir, 'provisiond.db'));
      db.exec(`CREATE TRIGGER audit_log_broken BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk says no'); END;`);
      db.close();

      const res = await inject('POST', '/v1/claims', installer.secret, { claimCode: 'closed-code-0123456789', owner: 'o', site: 's' });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ code: 'STORE_UNAVAILABLE' });
      const device = await running.store.getDevice('closed-1');
      expect(device?.state).toBe('registered');
      expect((await running.store.listEvents('closed-1')).map((e) => e.type)).toStrictEqual(['registered']);
      // and the refusal's own entry could not be written either: logged loudly, with the entry
      const loud = lines.map((l) => JSON.parse(l) as { level: number; msg: string; audit?: AuditEntry }).filter((l) => l.msg.startsWith('AUDIT ENTRY NOT WRITTEN'));
      expect(loud.length).toBeGreaterThanOrEqual(1);
      expect(loud[0]!.level).toBe(50);
      expect(loud[0]!.audit).toMatchObject({ action: 'device.claim', outcome: 'failure', errorCode: 'STORE_UNAVAILABLE' });
      expect(lines.join('\n')).not.toContain('closed-code-0123456789');
    } finally {
      await running.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
