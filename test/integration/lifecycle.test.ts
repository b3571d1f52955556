/**
 * The device lifecycle on real parts with a pinned clock (no sleeping for deadlines, windows or
 * expiry): stall detection with its alerts, the provisional claim window, release, revocation,
 * decommissioning, re-provisioning after a factory reset, certificate renewal, profile changes.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { ClaimResponse, Device, ErrorBody, MqttCsrAccepted } from '../../schemas/types.js';
import { ManualClock } from '../helpers/clock.js';
import { NETWORK, closed, connackCode, connectBootstrap, connectOperational, nextJson, opensslCsr, opensslCsrForKey } from '../helpers/device.js';
import { waitUntil } from '../helpers/wait.js';
import { startTestService, type TenantKeys, type TestService } from '../helpers/service.js';
import { sseClient, webhookReceiver } from '../helpers/webhook.js';

const DAY = 86_400_000;
const auth = (key: string) => ({ authorization: `Bearer ${key}` });
const policy = { minTlsVersion: '1.2', telemetryIntervalSeconds: 30, allowedTopics: ['devices/{deviceId}/telemetry'], firmwareFloor: '1.0.0' };
const profile = (extra: Record<string, unknown> = {}) => ({
  name: 'thermostats',
  deadlineSeconds: 600,
  items: [
    { id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} },
    { id: 'security', type: 'security-policy', required: true, priority: 10, await: false, data: policy },
  ],
  ...extra,
});

let clock: ManualClock;
let ts: TestService;
let keys: TenantKeys;
let hook: Awaited<ReturnType<typeof webhookReceiver>>;
const devices: SimDevice[] = [];
let n = 0;

beforeAll(async () => {
  clock = new ManualClock();
  hook = await webhookReceiver();
  ts = await startTestService({ alerts: { webhookBaseDelayMs: 10 } }, { clock });
  keys = await ts.tenant('acme', { webhook: { url: hook.url, secret: 'webhook-secret-0123456789' } });
  for (const [id, extra] of [
    ['keep', { reprovision: 'keep' }],
    ['reset', { reprovision: 'reset' }],
    ['refuse', { reprovision: 'refuse' }],
    ['renewable', { allowExpiredRenewal: true }],
  ] as const) {
    const res = await ts.running.api.inject({ method: 'PUT', url: `/v1/profiles/${id}`, headers: auth(keys.admin), payload: profile(extra) });
    expect(res.statusCode).toBe(200);
  }
});
afterEach(async () => {
  await Promise.all(devices.splice(0).map((d) => d.stop()));
  clock.set(new Date()); // back to real time: certificates must be valid for TLS, which uses real time
});
afterAll(async () => {
  await ts?.stop();
  await hook?.close();
});

async function claimed(profileId = 'keep'): Promise<{ id: string; claim: ClaimResponse }> {
  const id = `dev-${++n}-${Date.now().toString(36)}`;
  const claimCode = `code-${id}-xyz`;
  expect((await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(keys.factory), payload: { id, model: 'thermostat', claimCode } })).statusCode).toBe(201);
  const res = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(keys.installer), payload: { claimCode, owner: 'o', site: 's', network: NETWORK, profileId } });
  expect(res.statusCode).toBe(201);
  return { id, claim: res.json() as ClaimResponse };
}

async function provisioned(profileId = 'keep', opts: Partial<ConstructorParameters<typeof SimDevice>[0]> = {}) {
  const { id, claim } = await claimed(profileId);
  const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: claim.bootstrap, ...opts });
  devices.push(device);
  await device.run();
  return { id, device };
}

const post = (url: string, key = keys.admin, payload: Record<string, unknown> = {}) => ts.running.api.inject({ method: 'POST', url, headers: auth(key), payload });
const state = async (id: string) => (await ts.running.store.getDevice(id))?.state;
const expectCode = (res: { statusCode: number; json: () => unknown }, status: number, code: string) => {
  expect(res.statusCode).toBe(status);
  expect((res.json() as ErrorBody).code).toBe(code);
};

function opensslCrl(crlDer: Buffer, certPem?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'crl-'));
  try {
    writeFileSync(join(dir, 'crl.der'), crlDer);
    execFileSync('openssl', ['crl', '-inform', 'DER', '-in', 'crl.der', '-out', 'crl.pem'], { cwd: dir });
    writeFileSync(join(dir, 'root.pem'), ts.running.ca.rootPem);
    writeFileSync(join(dir, 'issuing.pem'), ts.running.ca.chainPems[0]!);
    const text = execFileSync('openssl', ['crl', '-in', 'crl.pem', '-noout', '-text'], { cwd: dir }).toString();
    if (!certPem) return text;
    writeFileSync(join(dir, 'dev.pem'), certPem);
    try {
      return execFileSync('openssl', ['verify', '-crl_check', '-CRLfile', 'crl.pem', '-CAfile', 'root.pem', '-untrusted', 'issuing.pem', 'dev.pem'], { cwd: dir, stdio: 'pipe' }).toString();
    } catch (err) {
      return String((err as { stdout?: Buffer }).stdout ?? '') + String((err as { stderr?: Buffer }).stderr ?? '');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function crl(): Promise<Buffer> {
  const res = await ts.running.api.inject({ url: '/v1/ca/crl' });
  expect(res.headers['content-type']).toBe('application/pkix-crl');
  return res.rawPayload;
}

describe('stall detection', () => {
  it('marks devices past their deadline stalled, with what they miss, and alerts by webhook and SSE', async () => {
    const stream = await sseClient(`${ts.running.httpUrl}/v1/events`, keys.viewer);
    try {
      // everything happens 601 s ago (deadline 600 s), then the clock comes back to now
      clock.set(new Date(Date.now() - 601_000));
      const silent = await claimed(); // never bootstraps
      const { id: brokenId } = await (async () => {
        const c = await claimed();
        const d = new SimDevice({ deviceId: c.id, model: 'thermostat', bootstrap: c.claim.bootstrap, brokenItems: ['security'] });
        devices.push(d);
        await d.enroll();
        await d.configure();
        return c;
      })();
      const ok = await provisioned();
      await waitUntil(async () => (await ts.running.store.getDevice(brokenId))?.config?.items.find((i) => i.id === 'network')?.status === 'applied', 'the broken device acknowledged the network');
      const delivered = hook.received.length;

      expect((await ts.running.lifecycle.scanStalls()).stalled).toEqual([]);
      clock.set(new Date());
      const okClaimedNow = await claimed(); // its deadline is 10 minutes away
      const { stalled } = await ts.running.lifecycle.scanStalls();
      expect(await state(okClaimedNow.id)).toBe('claimed');
      expect(stalled.sort()).toEqual([silent.id, brokenId].sort());
      expect(await state(ok.id)).toBe('provisioned');
      const broken = await ts.running.store.getDevice(brokenId);
      expect(broken).toMatchObject({ state: 'stalled', stalledAt: clock.now().toISOString() });
      expect((await ts.running.store.listEvents(brokenId)).at(-1)).toMatchObject({ type: 'stalled', actor: 'system', reason: expect.stringContaining('missing: security') });

      const hooks = (await hook.waitFor(delivered + 2)).slice(delivered);
      const bodies = hooks.map((h) => h.body).sort((x, y) => String(x.deviceId).localeCompare(String(y.deviceId)));
      expect(bodies).toEqual(
        [
          { deviceId: silent.id, missing: ['identity'] },
          { deviceId: brokenId, missing: ['security'] },
        ]
          .sort((x, y) => x.deviceId.localeCompare(y.deviceId))
          .map((e) => expect.objectContaining({ type: 'device.stalled', tenantId: 'acme', deviceId: e.deviceId, data: expect.objectContaining({ missing: e.missing }) })),
      );
      expect(hooks[0]!.headers['x-provisiond-signature']).toMatch(/^sha256=[0-9a-f]{64}$/);
      await stream.waitFor((e) => e.event === 'device.stalled' && e.data.deviceId === brokenId);
      // a second scan does not alert again
      expect((await ts.running.lifecycle.scanStalls()).stalled).toEqual([]);
      // the report lists them with what is missing
      const report = (await ts.running.api.inject({ url: '/v1/reports/fleet', headers: auth(keys.viewer) })).json() as { stalled: { deviceId: string; missing: string[] }[] };
      expect(report.stalled).toEqual(expect.arrayContaining([expect.objectContaining({ deviceId: brokenId, missing: ['security'] })]));
    } finally {
      stream.close();
    }
  });

  it('a stalled device that gets there after all is provisioned', async () => {
    clock.set(new Date(Date.now() - 601_000));
    const c = await claimed();
    clock.set(new Date());
    await ts.running.lifecycle.scanStalls();
    expect(await state(c.id)).toBe('stalled');
    const d = new SimDevice({ deviceId: c.id, model: 'thermostat', bootstrap: c.claim.bootstrap });
    devices.push(d);
    await d.run();
    expect(await state(c.id)).toBe('provisioned');
    const types = (await ts.running.store.listEvents(c.id)).map((e) => e.type);
    expect(types).toEqual(['registered', 'claimed', 'stalled', 'identity_issued', 'config_acknowledged', 'config_acknowledged', 'provisioned']);
  });
});

describe('provisional claim window and release', () => {
  it('within the window the installer releases: certificate revoked (CRL), device told to wipe, back in the pool', async () => {
    let wiped = '';
    const { id, device } = await provisioned('keep', { onWipe: (r) => (wiped = r) });
    const certPem = device.certificatePem;
    const serial = (await ts.running.store.getDevice(id))!.certificateSerial!;
    const gone = closed(device.client!, 3000);
    const res = await post(`/v1/devices/${id}/release`, keys.installer, { reason: 'customer returned it' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ state: 'released' });
    expect((res.json() as Device).owner).toBeUndefined();
    await gone;
    expect(wiped).toBe('customer returned it');
    expect((await ts.running.store.getCertificate(serial))?.status).toBe('revoked');
    const text = opensslCrl(await crl());
    expect(text).toContain(serial.toUpperCase());
    expect(text).toMatch(/Affiliation Changed/);
    expect(opensslCrl(await crl(), certPem)).toContain('certificate revoked');
    expect(await connackCode(ts.mqttUrl, { clientId: id, key: device.keyPem || undefined, cert: certPem, ca: ts.running.ca.rootPem })).not.toBe(0);

    // claiming it again starts a new window and a new provisioning
    const again = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(keys.installer), payload: { claimCode: `code-${id}-xyz`, owner: 'new owner', site: 's2', network: NETWORK } });
    expect(again.statusCode).toBe(201);
    const dev = (again.json() as ClaimResponse).device;
    expect(Date.parse(dev.provisionalUntil!) - clock.now().getTime()).toBe(30 * DAY);
    expect(dev).toMatchObject({ state: 'claimed', owner: 'new owner' });
  });

  it('after the window only an admin may release', async () => {
    const { id } = await provisioned();
    clock.advance(30 * DAY + 1000);
    const before = await ts.running.store.getDevice(id);
    expectCode(await post(`/v1/devices/${id}/release`, keys.installer), 403, 'RELEASE_WINDOW_CLOSED');
    expect(await ts.running.store.getDevice(id)).toEqual(before);
    expect((await post(`/v1/devices/${id}/release`, keys.admin)).statusCode).toBe(200);
  });
});

describe('revocation and decommissioning', () => {
  it('revoking drops the live connection within a second and refuses the certificate afterwards', async () => {
    const { id, device } = await provisioned();
    const certPem = device.certificatePem;
    const keyPem = device.keyPem;
    const gone = closed(device.client!, 1000);
    expect((await post(`/v1/devices/${id}/revoke`)).json()).toMatchObject({ state: 'revoked' });
    await gone;
    expect(await connackCode(ts.mqttUrl, { clientId: id, key: keyPem, cert: certPem, ca: ts.running.ca.rootPem })).toBe(5);
    expect(opensslCrl(await crl())).toMatch(/Key Compromise/);
    // revoked is final but for decommissioning
    expectCode(await post(`/v1/devices/${id}/release`), 409, 'DEVICE_STATE_INVALID');
    expectCode(await post(`/v1/devices/${id}/reprovision`), 409, 'DEVICE_STATE_INVALID');
    expect((await post(`/v1/devices/${id}/decommission`)).json()).toMatchObject({ state: 'decommissioned' });
  });

  it('decommissioning revokes, withdraws the configuration, tells the device to wipe and keeps the record', async () => {
    let wiped = false;
    const { id } = await provisioned('keep', { onWipe: () => (wiped = true) });
    const res = await post(`/v1/devices/${id}/decommission`, keys.admin, { reason: 'end of life' });
    expect(res.json()).toMatchObject({ state: 'decommissioned', decommissionedAt: clock.now().toISOString() });
    expect((res.json() as Device).config).toBeUndefined();
    await waitUntil(() => wiped, 'the device received wipe');
    const events = await ts.running.store.listEvents(id);
    expect(events.at(-1)).toMatchObject({ type: 'decommissioned', from: 'provisioned', to: 'decommissioned', reason: 'end of life' });
    expect(events.length).toBeGreaterThan(5);
    // terminal
    for (const action of ['release', 'revoke', 'reprovision']) expectCode(await post(`/v1/devices/${id}/${action}`), 409, 'DEVICE_STATE_INVALID');
    expect((await post(`/v1/devices/${id}/decommission`)).statusCode).toBe(200);
    expectCode(await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(keys.installer), payload: { claimCode: `code-${id}-xyz`, owner: 'o', site: 's' } }), 409, 'DEVICE_ALREADY_CLAIMED');
  });

  it('refuses lifecycle actions that do not fit the state, and roles that may not act', async () => {
    const { id } = await claimed();
    expectCode(await post(`/v1/devices/${id}/revoke`), 409, 'DEVICE_STATE_INVALID'); // no identity yet
    expectCode(await post(`/v1/devices/${id}/reprovision`, keys.installer), 409, 'DEVICE_STATE_INVALID');
    expectCode(await post(`/v1/devices/${id}/config/push`), 409, 'DEVICE_STATE_INVALID');
    expectCode(await post(`/v1/devices/${id}/renew`), 409, 'DEVICE_STATE_INVALID');
    expectCode(await post(`/v1/devices/${id}/revoke`, keys.installer), 403, 'ROLE_FORBIDDEN');
    expectCode(await post(`/v1/devices/${id}/decommission`, keys.viewer), 403, 'ROLE_FORBIDDEN');
    expectCode(await post(`/v1/devices/${id}/release`, keys.factory), 403, 'ROLE_FORBIDDEN');
    const reg = await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(keys.factory), payload: { id: `${id}-r`, model: 'm', claimCode: 'registered-only-1' } });
    expect(reg.statusCode).toBe(201);
    expectCode(await post(`/v1/devices/${id}-r/release`), 409, 'DEVICE_STATE_INVALID');
  });
});

describe('re-provisioning after a factory reset', () => {
  it('keep: a new identity, the old certificate revoked, config numbering and history kept', async () => {
    const { id, device } = await provisioned('keep');
    const oldSerial = (await ts.running.store.getDevice(id))!.certificateSerial!;
    const res = await post(`/v1/devices/${id}/reprovision`, keys.installer);
    expect(res.statusCode).toBe(201);
    const claim = res.json() as ClaimResponse;
    expect(claim.device.state).toBe('claimed');
    expect((await ts.running.store.getCertificate(oldSerial))?.status).toBe('revoked');
    await device.factoryReset(claim.bootstrap);
    await device.run();
    const after = (await ts.running.store.getDevice(id))!;
    expect(after).toMatchObject({ state: 'provisioned', profileId: 'keep' });
    expect(after.certificateSerial).not.toBe(oldSerial);
    expect(after.config?.version).toBe(2);
    expect((await ts.running.store.listEvents(id)).map((e) => e.type)).toContain('reprovisioning');
  });

  it('reset: back to the latest profile version with a new deadline', async () => {
    const { id, device } = await provisioned('reset');
    await ts.running.api.inject({ method: 'PUT', url: '/v1/profiles/reset', headers: auth(keys.admin), payload: profile({ reprovision: 'reset', deadlineSeconds: 1200 }) });
    const claim = (await post(`/v1/devices/${id}/reprovision`, keys.installer)).json() as ClaimResponse;
    expect(claim.device.profileVersion).toBe((await ts.running.store.getProfile('acme', 'reset'))!.version);
    expect(Date.parse(claim.device.deadlineAt!) - clock.now().getTime()).toBe(1_200_000);
    await device.factoryReset(claim.bootstrap);
    await device.run();
    expect(await state(id)).toBe('provisioned');
  });

  it('refuse: REPROVISION_REFUSED, nothing changes', async () => {
    const { id } = await provisioned('refuse');
    const before = await ts.running.store.getDevice(id);
    expectCode(await post(`/v1/devices/${id}/reprovision`, keys.installer), 409, 'REPROVISION_REFUSED');
    expect(await ts.running.store.getDevice(id)).toEqual(before);
  });
});

describe('certificate renewal', () => {
  it('the device renews over its operational connection; the old certificate is refused after', async () => {
    const { id, device } = await provisioned();
    const old = { cert: device.certificatePem, key: device.keyPem };
    await device.renew();
    expect(device.certificatePem).not.toBe(old.cert);
    const rec = (await ts.running.store.getDevice(id))!;
    expect(rec.state).toBe('provisioned');
    expect(device.certificatePem).toContain(''); // new certificate in use
    expect(await connackCode(ts.mqttUrl, { clientId: id, key: old.key, cert: old.cert, ca: ts.running.ca.rootPem })).toBe(5);
    expect((await ts.running.store.listEvents(id)).at(-1)).toMatchObject({ type: 'certificate_renewed' });
    expect(device.client?.connected).toBe(true);
  });

  it('the service asks the device to renew', async () => {
    const { id, device } = await provisioned();
    const before = (await ts.running.store.getDevice(id))!.certificateSerial;
    expect((await post(`/v1/devices/${id}/renew`)).statusCode).toBe(200);
    await waitUntil(async () => (await ts.running.store.getDevice(id))!.certificateSerial !== before, 'the device renewed');
    expect((await ts.running.store.getDevice(id))!.certificateSerial).not.toBe(before);
  });

  it('a device renews by itself at about two thirds of its certificate lifetime', async () => {
    const t = await startTestService({ ca: { deviceCertValidityDays: 1 } }, { clock });
    try {
      const k = await t.tenant('acme3');
      // enrolled 17 hours ago with a one-day certificate: past the two-thirds point (16 h)
      clock.set(new Date(Date.now() - 17 * 3_600_000));
      const id = `auto-${++n}`;
      await t.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(k.factory), payload: { id, model: 'thermostat', claimCode: `code-${id}-xyz` } });
      const claim = (await t.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(k.installer), payload: { claimCode: `code-${id}-xyz`, owner: 'o', site: 's', network: NETWORK } })).json() as ClaimResponse;
      const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: claim.bootstrap, autoRenew: true });
      devices.push(device);
      await device.enroll();
      clock.set(new Date());
      const first = (await t.running.store.getDevice(id))!.certificateSerial;
      await device.configure();
      await waitUntil(async () => (await t.running.store.getDevice(id))!.certificateSerial !== first, 'the device renewed by itself');
      const after = (await t.running.store.getDevice(id))!;
      expect(after.certificateSerial).not.toBe(first);
      expect(Date.parse(after.certificateNotAfter!)).toBeGreaterThan(Date.now() + 23 * 3_600_000);
      expect(after.state).toBe('provisioned');
    } finally {
      await Promise.all(devices.splice(0).map((d) => d.stop()));
      await t.stop();
    }
  });

  it('an expired certificate may renew only when the profile allows it', async () => {
    const t = await startTestService({ ca: { deviceCertValidityDays: 1 } }, { clock });
    try {
      const k = await t.tenant('acme2');
      for (const id of ['keep', 'renewable']) {
        const res = await t.running.api.inject({ method: 'PUT', url: `/v1/profiles/${id}`, headers: auth(k.admin), payload: profile(id === 'renewable' ? { allowExpiredRenewal: true } : {}) });
        expect(res.statusCode).toBe(200);
      }
      /** Enrolled two days ago with a one-day certificate: expired by real time now. */
      const expiredDevice = async (profileId: string) => {
        clock.set(new Date(Date.now() - 2 * DAY));
        const id = `exp-${profileId}-${++n}`;
        await t.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(k.factory), payload: { id, model: 'thermostat', claimCode: `code-${id}-xyz` } });
        const claim = (await t.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(k.installer), payload: { claimCode: `code-${id}-xyz`, owner: 'o', site: 's', profileId } })).json() as ClaimResponse;
        const keys = opensslCsr('p256');
        const client = await connectBootstrap(t, claim.bootstrap!);
        await client.subscribeAsync(`devices/${id}/csr/accepted`, { qos: 1 });
        const answer = nextJson<MqttCsrAccepted>(client, `devices/${id}/csr/accepted`);
        await client.publishAsync(`devices/${id}/csr`, JSON.stringify({ requestId: 'r', csr: keys.csrPem }), { qos: 1 });
        const cert = (await answer).certificate;
        await client.endAsync();
        clock.set(new Date());
        expect(Date.parse(new X509Certificate(cert).validTo)).toBeLessThan(Date.now());
        return { id, key: keys.keyPem, cert };
      };

      const refused = await expiredDevice('keep');
      expect(await connackCode(t.mqttUrl, { clientId: refused.id, key: refused.key, cert: refused.cert, ca: t.running.ca.rootPem })).toBe(5);

      const allowed = await expiredDevice('renewable');
      const client = await connectOperational(t, allowed.id, allowed.key, allowed.cert);
      try {
        // a renewal-only session: the CSR and its answers, nothing else
        const refusedSub = (await client.subscribeAsync(`devices/${allowed.id}/config`, { qos: 1 }).catch((e: { packet?: { granted: number[] } }) => e.packet)) as { granted: number[] };
        expect(refusedSub.granted).toEqual([128]);
        await client.subscribeAsync(`devices/${allowed.id}/csr/accepted`, { qos: 1 });
        const fresh = opensslCsr('p256');
        const answer = nextJson<MqttCsrAccepted>(client, `devices/${allowed.id}/csr/accepted`);
        await client.publishAsync(`devices/${allowed.id}/csr`, JSON.stringify({ requestId: 'renew', csr: fresh.csrPem }), { qos: 1 });
        const renewed = (await answer).certificate;
        expect(Date.parse(new X509Certificate(renewed).validTo)).toBeGreaterThan(Date.now());
        expect(await connackCode(t.mqttUrl, { clientId: allowed.id, key: fresh.keyPem, cert: renewed, ca: t.running.ca.rootPem })).toBe(0);
        expect((await t.running.store.listEvents(allowed.id)).map((e) => e.type)).toContain('certificate_renewed');
      } finally {
        await client.endAsync(true);
      }
    } finally {
      await t.stop();
    }
  });
});

describe('profile changes', () => {
  it('re-delivers the changed items to every device on the profile; the state follows', async () => {
    await ts.running.api.inject({ method: 'PUT', url: '/v1/profiles/fleet', headers: auth(keys.admin), payload: profile() });
    const fleet = await Promise.all([1, 2, 3].map(() => provisioned('fleet')));
    for (const f of fleet) expect(await state(f.id)).toBe('provisioned');
    const changed = profile({
      items: [
        { id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} },
        { id: 'security', type: 'security-policy', required: true, priority: 10, await: false, data: { ...policy, minTlsVersion: '1.3' } },
        { id: 'tz', type: 'time', required: false, priority: 20, await: false, data: { timezone: 'Europe/Berlin' } },
      ],
    });
    const res = await ts.running.api.inject({ method: 'PUT', url: '/v1/profiles/fleet', headers: auth(keys.admin), payload: changed });
    expect(res.json()).toMatchObject({ profile: { version: 2 }, rollout: { updated: 3 } });
    // the connected devices get version 2, apply the changed items and are provisioned again
    for (const f of fleet) {
      await waitUntil(async () => {
        const d = await ts.running.store.getDevice(f.id);
        return d?.config?.version === 2 && d.state === 'provisioned';
      }, `${f.id} applied version 2`);
      const d = (await ts.running.store.getDevice(f.id))!;
      expect(d).toMatchObject({ state: 'provisioned', profileVersion: 2, config: { version: 2 } });
      const byId = Object.fromEntries(d.config!.items.map((i) => [i.id, i]));
      expect(byId.network).toMatchObject({ status: 'applied', version: 1 }); // unchanged: kept
      expect(byId.security).toMatchObject({ status: 'applied', version: 2 });
      expect(byId.tz).toMatchObject({ status: 'applied', required: false });
      expect((await ts.running.store.listEvents(f.id)).map((e) => e.type)).toContain('config_updated');
    }
    // a profile with an invalid item is refused and stores nothing
    const bad = await ts.running.api.inject({
      method: 'PUT',
      url: '/v1/profiles/fleet',
      headers: auth(keys.admin),
      payload: profile({ items: [{ id: 'tz', type: 'time', required: true, priority: 0, await: false, data: { timezone: 'Mars/Olympus' } }] }),
    });
    expectCode(bad, 400, 'PROFILE_INVALID');
    expect((await ts.running.store.getProfile('acme', 'fleet'))?.version).toBe(2);
  });
});

describe('edge cases found in review', () => {
  it('a released device claimed again provisions again (config numbering continues)', async () => {
    const { id } = await provisioned();
    expect((await post(`/v1/devices/${id}/release`, keys.installer)).statusCode).toBe(200);
    const again = (await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(keys.installer), payload: { claimCode: `code-${id}-xyz`, owner: 'o2', site: 's2', network: NETWORK } })).json() as ClaimResponse;
    const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: again.bootstrap });
    devices.push(device);
    await device.run();
    expect(await ts.running.store.getDevice(id)).toMatchObject({ state: 'provisioned', owner: 'o2', config: { version: 2 } });
  });

  it('renewal makes a config document for the new key; a lost answer is fetched again with the old certificate, which is revoked once the new one is used', async () => {
    const { id, device } = await provisioned();
    const before = (await ts.running.store.getDevice(id))!;
    const old = { key: device.keyPem, cert: device.certificatePem, serial: before.certificateSerial! };
    await device.stop();
    // renew with a raw client and "lose" the answer
    const fresh = opensslCsr('p256');
    let client = await connectOperational(ts, id, old.key, old.cert);
    await client.subscribeAsync(`devices/${id}/csr/accepted`, { qos: 1 });
    let answer = nextJson<MqttCsrAccepted>(client, `devices/${id}/csr/accepted`);
    await client.publishAsync(`devices/${id}/csr`, JSON.stringify({ requestId: 'r1', csr: fresh.csrPem }), { qos: 1 });
    const first = await answer;
    await client.endAsync(true);
    const renewed = (await ts.running.store.getDevice(id))!;
    expect(renewed.config?.version).toBe(before.config!.version + 1);
    expect(renewed.config?.items.every((i) => i.status === 'applied')).toBe(true);
    // the new document's Wi-Fi secret opens with the new key
    const doc = await ts.running.store.getConfigDocument(id, renewed.config!.version);
    const payload = JSON.parse(Buffer.from(doc!.jws.split('.')[1]!, 'base64url').toString()) as { items: { type: string; data: { wifi?: { secretJwe?: string } } }[] };
    const jwe = payload.items.find((i) => i.type === 'network')!.data.wifi!.secretJwe!;
    const { compactDecrypt } = await import('jose');
    const { createPrivateKey } = await import('node:crypto');
    expect(Buffer.from((await compactDecrypt(jwe, createPrivateKey(fresh.keyPem))).plaintext).toString()).toBe(NETWORK.wifi.secret);
    // the old certificate still connects and gets the same new certificate for the same key
    client = await connectOperational(ts, id, old.key, old.cert);
    await client.subscribeAsync(`devices/${id}/csr/accepted`, { qos: 1 });
    answer = nextJson<MqttCsrAccepted>(client, `devices/${id}/csr/accepted`);
    await client.publishAsync(`devices/${id}/csr`, JSON.stringify({ requestId: 'r2', csr: opensslCsrForKey(fresh.keyPem) }), { qos: 1 });
    expect((await answer).serial).toBe(first.serial);
    await client.endAsync(true);
    // the first use of the new certificate retires the old one
    expect(await connackCode(ts.mqttUrl, { clientId: id, key: fresh.keyPem, cert: first.certificate, ca: ts.running.ca.rootPem })).toBe(0);
    expect((await ts.running.store.getCertificate(old.serial))).toMatchObject({ status: 'revoked', revocationReason: 'superseded' });
    expect(await connackCode(ts.mqttUrl, { clientId: id, key: old.key, cert: old.cert, ca: ts.running.ca.rootPem })).toBe(5);
  });

  it('a device being decommissioned cannot renew in its last second', async () => {
    const { id, device } = await provisioned();
    const client = await connectOperational(ts, id, device.keyPem, device.certificatePem);
    await device.stop();
    await client.subscribeAsync(`devices/${id}/csr/rejected`, { qos: 1 });
    expect((await post(`/v1/devices/${id}/decommission`)).statusCode).toBe(200);
    const rejected = nextJson<{ code: string }>(client, `devices/${id}/csr/rejected`, 900);
    client.publish(`devices/${id}/csr`, JSON.stringify({ requestId: 'late', csr: opensslCsr('p256').csrPem }), { qos: 1 });
    const outcome = await rejected.catch(() => ({ code: 'connection closed first' }));
    expect(['DEVICE_STATE_INVALID', 'CERTIFICATE_UNKNOWN', 'connection closed first']).toContain(outcome.code);
    expect((await ts.running.store.listCertificates(id)).filter((c) => c.status === 'active')).toEqual([]);
    await client.endAsync(true);
  });

  it('a change of optional items only reaches an offline device when it comes back', async () => {
    await ts.running.api.inject({ method: 'PUT', url: '/v1/profiles/optional', headers: auth(keys.admin), payload: profile() });
    const { id, device } = await provisioned('optional');
    const creds = { key: device.keyPem, cert: device.certificatePem };
    await device.stop();
    const changed = profile({ items: [...profile().items, { id: 'tz', type: 'time', required: false, priority: 30, await: false, data: { timezone: 'Asia/Tokyo' } }] });
    expect((await ts.running.api.inject({ method: 'PUT', url: '/v1/profiles/optional', headers: auth(keys.admin), payload: changed })).json()).toMatchObject({ rollout: { updated: 1 } });
    expect(await state(id)).toBe('provisioned');
    const client = await connectOperational(ts, id, creds.key, creds.cert);
    const doc = nextJson<string>(client, `devices/${id}/config`);
    await client.subscribeAsync(`devices/${id}/config`, { qos: 1 });
    expect(String(await doc)).toMatch(/^ey/);
    await client.endAsync(true);
  });

  it('a profile that requires nothing: the identity is all it takes', async () => {
    await ts.running.api.inject({
      method: 'PUT',
      url: '/v1/profiles/nothing-required',
      headers: auth(keys.admin),
      payload: profile({ items: [{ id: 'tz', type: 'time', required: false, priority: 0, await: false, data: { timezone: 'UTC' } }] }),
    });
    const { id, claim } = await claimed('nothing-required');
    const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: claim.bootstrap });
    devices.push(device);
    await device.enroll();
    expect(await state(id)).toBe('provisioned');
    await device.configure(false);
    await waitUntil(async () => (await ts.running.store.getDevice(id))?.config?.items[0]?.status === 'applied', 'the optional item was acknowledged');
    expect(await state(id)).toBe('provisioned');
  });

  it('re-provisioning gives a new deadline; lifecycle actions take an empty body', async () => {
    const { id } = await provisioned('keep');
    clock.set(new Date(Date.now() + 3_600_000));
    const res = await ts.running.api.inject({ method: 'POST', url: `/v1/devices/${id}/reprovision`, headers: auth(keys.installer) });
    expect(res.statusCode).toBe(201);
    expect(Date.parse((res.json() as ClaimResponse).device.deadlineAt!)).toBe(clock.now().getTime() + 600_000);
    const bare = await ts.running.api.inject({ method: 'POST', url: `/v1/devices/${id}/release`, headers: auth(keys.admin) });
    expect(bare.statusCode).toBe(200);
  });

  it('a device claimed before it had a profile follows its tenant default', async () => {
    const { id, claim } = await claimed();
    const rec = (await ts.running.store.getDevice(id))!;
    const { profileId: _p, profileVersion: _v, ...legacy } = rec;
    await ts.running.store.updateDevice(legacy, rec.revision, []);
    const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: claim.bootstrap });
    devices.push(device);
    await device.run();
    expect(await state(id)).toBe('provisioned');
  });
});
