/** In-line issuance at the factory line, and the "thin" mode it enables. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, makeKeyAndCsr } from '../../firmware-sim/index.js';
import type { ClaimResponse, FactoryIssueResult } from '../../schemas/types.js';
import { NETWORK, connackCode, register } from '../helpers/device.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { PRIVATE_KEY_PEM_HEADER } from '../helpers/pem.js';

let ts: TestService;
beforeAll(async () => {
  ts = await startTestService();
});
afterAll(async () => {
  await ts?.stop();
});
const auth = (key: string) => ({ authorization: `Bearer ${key}` });

/** A key pair and CSR made in-process, as a device does (fast enough for hundreds per test). */
const keyAndCsr = (name: string) => makeKeyAndCsr(name);

const issue = (devices: { deviceId: string; csr: string }[]) =>
  ts.running.api.inject({ method: 'POST', url: '/v1/factory/certificates', headers: auth(ts.keys.factory), payload: { devices } });

describe('factory line', () => {
  it('issues a batch of identities in line; each verifies with openssl; a station retry returns the same certificates', async () => {
    const ids = Array.from({ length: 200 }, (_, i) => `line-${i}`);
    for (const id of ids) await register(ts, { id });
    const made = await Promise.all(ids.map((id) => keyAndCsr(id)));
    const res = await issue(ids.map((deviceId, i) => ({ deviceId, csr: made[i]!.csrPem })));
    expect(res.statusCode).toBe(200);
    const r = res.json() as FactoryIssueResult;
    expect(r).toMatchObject({ issued: 200, unchanged: 0, failed: 0 });
    const dir = mkdtempSync(join(tmpdir(), 'line-'));
    try {
      writeFileSync(join(dir, 'root.pem'), r.chain.at(-1)!);
      writeFileSync(join(dir, 'issuing.pem'), r.chain[0]!);
      for (const k of [0, 99, 199]) {
        writeFileSync(join(dir, 'd.pem'), r.results[k]!.certificate!);
        expect(execFileSync('openssl', ['verify', '-CAfile', 'root.pem', '-untrusted', 'issuing.pem', 'd.pem'], { cwd: dir }).toString().trim()).toBe('d.pem: OK');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await ts.running.store.getDevice('line-7')).toMatchObject({ state: 'registered', certificateSerial: r.results[7]!.serial });
    const again = (await issue([{ deviceId: 'line-7', csr: made[7]!.csrPem }])).json() as FactoryIssueResult;
    expect(again.results[0]).toMatchObject({ status: 'unchanged', serial: r.results[7]!.serial });
  });

  it('refuses per item, coded, and carries on with the others', async () => {
    await register(ts, { id: 'ok-a' });
    await register(ts, { id: 'ok-b' });
    const a = await keyAndCsr('a');
    await issue([{ deviceId: 'ok-a', csr: a.csrPem }]);
    const claimed = await register(ts, { id: 'claimed-x' });
    await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: claimed.claimCode, owner: 'o', site: 's' } });
    const b = await keyAndCsr('b');
    const r = (await issue([
      { deviceId: 'ok-b', csr: a.csrPem }, // another device's key
      { deviceId: 'no-such-device', csr: b.csrPem },
      { deviceId: 'claimed-x', csr: b.csrPem },
      { deviceId: 'ok-b', csr: b.csrPem.replace(/A/g, 'B') },
      { deviceId: 'ok-b', csr: b.csrPem },
    ])).json() as FactoryIssueResult;
    expect(r.results.map((x) => [x.deviceId, x.status, x.code])).toEqual([
      ['ok-b', 'failed', 'KEY_IN_USE'],
      ['no-such-device', 'failed', 'DEVICE_NOT_FOUND'],
      ['claimed-x', 'failed', 'DEVICE_STATE_INVALID'],
      ['ok-b', 'failed', expect.stringMatching(/^CSR_/)],
      ['ok-b', 'issued', undefined],
    ]);
    const installer = await ts.running.api.inject({ method: 'POST', url: '/v1/factory/certificates', headers: auth(ts.keys.installer), payload: { devices: [{ deviceId: 'ok-b', csr: b.csrPem }] } });
    expect(installer.statusCode).toBe(403);
  });

  it('thin mode: identity at the factory, the claim binds ownership, the device configures and is provisioned', async () => {
    const { id, claimCode } = await register(ts, { id: 'thin-1' });
    const made = await keyAndCsr(id);
    const issued = (await issue([{ deviceId: id, csr: made.csrPem }])).json() as FactoryIssueResult;
    // before the claim the device cannot connect: nobody owns it yet
    expect(await connackCode(ts.mqttUrl, { clientId: id, key: made.keyPem, cert: issued.results[0]!.certificate!, ca: ts.running.ca.rootPem })).toBe(5);
    const claim = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode, owner: 'Acme', site: 'hq', network: NETWORK } });
    expect(claim.statusCode).toBe(201);
    const body = claim.json() as ClaimResponse;
    expect(body.bootstrap).toBeUndefined();
    expect(body.device).toMatchObject({ state: 'identity_issued', certificateSerial: issued.results[0]!.serial, owner: 'Acme' });
    const device = new SimDevice({
      deviceId: id,
      model: 'thermostat',
      broker: { mqttUrl: ts.mqttUrl, caCertificate: ts.running.ca.rootPem },
      identity: { keyPem: made.keyPem, certPem: issued.results[0]!.certificate!, chainPems: issued.chain },
    });
    try {
      await device.run();
    } finally {
      await device.stop();
    }
    expect((await ts.running.store.getDevice(id))?.state).toBe('provisioned');
    expect((await ts.running.store.listEvents(id)).map((e) => e.type)).toEqual([
      'registered',
      'identity_issued',
      'claimed',
      'identity_issued',
      'config_delivered',
      'config_acknowledged',
      'config_acknowledged',
      'provisioned',
    ]);
  });
});

describe('server-side key generation', () => {
  it('is off unless the tenant enables it; then each device gets a PKCS#12 bundle that openssl opens, and provisions with it', async () => {
    const { readPkcs12 } = await import('../../src/factory/pkcs12.js');
    const { id, claimCode } = await register(ts, { id: 'nokey-1' });
    const ask = () => ts.running.api.inject({ method: 'POST', url: '/v1/factory/bundles', headers: auth(ts.keys.factory), payload: { devices: [id] } });
    const off = await ask();
    expect(off.statusCode).toBe(403);
    expect((off.json() as { code: string }).code).toBe('SERVER_KEYGEN_DISABLED');
    expect((await ts.running.store.getDevice(id))?.certificateSerial).toBeUndefined();

    await ts.running.api.inject({ method: 'PATCH', url: '/v1/tenant', headers: auth(ts.keys.admin), payload: { serverKeyGeneration: true } });
    const res = await ask();
    expect(res.statusCode).toBe(200);
    const bundle = (res.json() as { results: { status: string; pkcs12: string; password: string; serial: string }[] }).results[0]!;
    expect(bundle.status).toBe('issued');
    expect(bundle.password).toMatch(/^[0-9A-Z]{4}(-[0-9A-Z]{1,4}){6}$/);
    const dir = mkdtempSync(join(tmpdir(), 'p12-'));
    try {
      writeFileSync(join(dir, 'b.p12'), Buffer.from(bundle.pkcs12, 'base64'));
      const out = execFileSync('openssl', ['pkcs12', '-in', 'b.p12', '-passin', `pass:${bundle.password}`, '-nodes', '-info'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
      expect(out).toContain(PRIVATE_KEY_PEM_HEADER);
      expect(out).toContain(`CN = ${id}`);
      expect(() => execFileSync('openssl', ['pkcs12', '-in', 'b.p12', '-passin', 'pass:wrong', '-nodes'], { cwd: dir, stdio: 'pipe' })).toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // nothing of the key or the password is stored
    const stored = JSON.stringify([await ts.running.store.getDevice(id), await ts.running.store.listCertificates(id), await ts.running.store.listEvents(id)]);
    expect(stored).not.toContain(bundle.password);
    expect(stored).not.toContain(PRIVATE_KEY_PEM_HEADER);
    // the device, flashed with the bundle, is claimed and provisions
    const identity = readPkcs12(Buffer.from(bundle.pkcs12, 'base64'), bundle.password);
    await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode, owner: 'o', site: 's', network: NETWORK } });
    const device = new SimDevice({ deviceId: id, model: 'camera', broker: { mqttUrl: ts.mqttUrl, caCertificate: ts.running.ca.rootPem }, identity });
    try {
      await device.run();
    } finally {
      await device.stop();
    }
    expect((await ts.running.store.getDevice(id))?.state).toBe('provisioned');
    await ts.running.api.inject({ method: 'PATCH', url: '/v1/tenant', headers: auth(ts.keys.admin), payload: { serverKeyGeneration: false } });
  });
});

describe('fully pre-provisioned', () => {
  it('identity and baseline configuration at the factory; in the field the claim only binds ownership', async () => {
    const { openConfigDocument } = await import('../../firmware-sim/protocol.js');
    const { X509Certificate } = await import('node:crypto');
    const a = await register(ts, { id: 'pre-1' });
    const b = await register(ts, { id: 'pre-2' });
    const ka = await keyAndCsr('pre-1');
    const kb = await keyAndCsr('pre-2');
    const res = (await ts.running.api.inject({
      method: 'POST',
      url: '/v1/factory/certificates',
      headers: auth(ts.keys.factory),
      payload: { baseline: true, devices: [{ deviceId: 'pre-1', csr: ka.csrPem }, { deviceId: 'pre-2', csr: kb.csrPem }] },
    })).json() as FactoryIssueResult;
    expect(res.issued).toBe(2);
    // the station flashes a signed baseline the device can check like any config document
    const doc = await openConfigDocument(res.results[0]!.baselineConfig!, new X509Certificate(ts.running.ca.rootPem), 'pre-1');
    expect(doc.items.map((i) => i.id)).toEqual(['security']); // no site network at the factory
    expect(await ts.running.store.getDevice('pre-1')).toMatchObject({ state: 'registered', config: { version: 1, items: [{ id: 'security', status: 'applied' }] } });

    // claimed without a network: provisioned at once, the device does nothing
    const c1 = (await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: a.claimCode, owner: 'Acme', site: 'hq' } })).json() as ClaimResponse;
    expect(c1.device).toMatchObject({ state: 'provisioned', owner: 'Acme' });
    expect(c1.bootstrap).toBeUndefined();

    // claimed with the site's network: only the network is left, the device applies it
    const c2 = (await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: b.claimCode, owner: 'Acme', site: 'hq', network: NETWORK } })).json() as ClaimResponse;
    expect(c2.device.state).toBe('identity_issued');
    expect(c2.device.config?.items.map((i) => [i.id, i.status])).toEqual([
      ['network', 'pending'],
      ['security', 'applied'],
    ]);
    const device = new SimDevice({
      deviceId: 'pre-2',
      model: 'thermostat',
      broker: { mqttUrl: ts.mqttUrl, caCertificate: ts.running.ca.rootPem },
      identity: { keyPem: kb.keyPem, certPem: res.results[1]!.certificate!, chainPems: res.chain },
    });
    try {
      await device.run();
    } finally {
      await device.stop();
    }
    expect((await ts.running.store.getDevice('pre-2'))?.state).toBe('provisioned');
  });
});
