/**
 * Zero-touch enrollment with manufacturer birth certificates: deny by default. A device is
 * enrolled only when its birth certificate chains to a manufacturer CA its tenant registered, its
 * serial is on the tenant's allowlist for that device, it is not enrolled yet, and the optional
 * pre-provisioning webhook allows it (in time: it fails closed).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { MqttCsrAccepted, MqttError } from '../../schemas/types.js';
import { connackCode, nextJson, opensslCsr } from '../helpers/device.js';
import { snapshotDevice, startTestService, type TenantKeys, type TestService } from '../helpers/service.js';
import mqtt from 'mqtt';

let ts: TestService;
let maker: TenantKeys;
let dir: string;
const auth = (key: string) => ({ authorization: `Bearer ${key}` });
const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { cwd: dir, stdio: 'pipe' }).toString();

/** A manufacturer CA made with openssl. */
function manufacturerCa(name: string): string {
  sh(`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/O=${name}/CN=${name} Birth CA" -keyout ${name}.key -out ${name}.pem -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign`);
  return readFileSync(join(dir, `${name}.pem`), 'utf8');
}

/** A birth certificate for a device, as the manufacturer's line makes it. */
function birthCert(ca: string, deviceId: string, serialHex: string): { key: string; cert: string } {
  sh(`openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=${deviceId}" -keyout ${deviceId}.key -out ${deviceId}.csr`);
  sh(`openssl x509 -req -in ${deviceId}.csr -CA ${ca}.pem -CAkey ${ca}.key -set_serial 0x${serialHex} -days 3650 -out ${deviceId}.pem`);
  return { key: readFileSync(join(dir, `${deviceId}.key`), 'utf8'), cert: readFileSync(join(dir, `${deviceId}.pem`), 'utf8') };
}

async function register(keys: TenantKeys, id: string, birthSerial: string) {
  const res = await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(keys.factory), payload: { id, model: 'camera', birthSerial } });
  expect(res.statusCode).toBe(201);
}

/** Connects with the birth certificate and sends a CSR: the accepted answer or the rejection. */
async function enroll(id: string, birth: { key: string; cert: string }) {
  const client = await mqtt.connectAsync(ts.mqttUrl, { clientId: id, key: birth.key, cert: birth.cert, ca: ts.running.ca.rootPem, protocolVersion: 4, reconnectPeriod: 0 });
  try {
    await client.subscribeAsync([`devices/${id}/csr/accepted`, `devices/${id}/csr/rejected`], { qos: 1 });
    const keys = opensslCsr('p256');
    const accepted = nextJson<MqttCsrAccepted>(client, `devices/${id}/csr/accepted`).then((v) => ({ accepted: v, keyPem: keys.keyPem }));
    const rejected = nextJson<MqttError>(client, `devices/${id}/csr/rejected`).then((v) => ({ rejected: v }));
    accepted.catch(() => undefined);
    rejected.catch(() => undefined);
    await client.publishAsync(`devices/${id}/csr`, JSON.stringify({ requestId: 'zt', csr: keys.csrPem }), { qos: 1 });
    return await Promise.race([accepted, rejected]);
  } finally {
    await client.endAsync(true);
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'zt-'));
  ts = await startTestService();
  maker = await ts.tenant('maker');
  const res = await ts.running.api.inject({ method: 'POST', url: '/v1/tenant/manufacturer-cas', headers: auth(maker.admin), payload: { id: 'acme-fab', name: 'ACME fab 3', certificate: manufacturerCa('acme') } });
  expect(res.statusCode).toBe(201);
  manufacturerCa('rogue');
});
afterAll(async () => {
  await ts?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('zero-touch with birth certificates', () => {
  it('enrols an allowlisted device once; it then provisions with its new identity', async () => {
    await register(maker, 'zt-cam-1', 'A1B2C3');
    const birth = birthCert('acme', 'zt-cam-1', 'a1b2c3');
    const out = await enroll('zt-cam-1', birth);
    expect(out).toHaveProperty('accepted');
    const { accepted, keyPem } = out as { accepted: MqttCsrAccepted; keyPem: string };
    expect(await ts.running.store.getDevice('zt-cam-1')).toMatchObject({ state: 'identity_issued', tenantId: 'maker', profileId: 'default', certificateSerial: accepted.serial });
    const events = await ts.running.store.listEvents('zt-cam-1');
    expect(events.map((e) => [e.type, e.actor])).toEqual([
      ['registered', expect.stringMatching(/^apikey:/)],
      ['claimed', 'manufacturer-ca:acme-fab'],
      ['identity_issued', 'device:zt-cam-1'],
    ]);
    // audited: the claim and the issuance, by the device with its birth certificate, in one commit
    const audit = (await ts.running.store.listAudit({ deviceId: 'zt-cam-1', limit: 10 })).entries;
    expect(audit.map((e) => [e.action, e.actor, e.outcome, e.tenantId])).toEqual([
      ['certificate.issue', 'device:zt-cam-1', 'success', 'maker'],
      ['device.claim', 'device:zt-cam-1', 'success', 'maker'],
    ]);
    expect(audit[0]).toMatchObject({ serial: accepted.serial, details: { zeroTouch: true } });
    expect(audit[1]).toMatchObject({ details: { zeroTouch: true, birthSerial: 'a1b2c3', manufacturerCa: 'acme-fab' } });
    const device = new SimDevice({
      deviceId: 'zt-cam-1',
      model: 'camera',
      broker: { mqttUrl: ts.mqttUrl, caCertificate: ts.running.ca.rootPem },
      identity: { keyPem, certPem: accepted.certificate, chainPems: accepted.chain },
    });
    try {
      await device.run();
    } finally {
      await device.stop();
    }
    expect((await ts.running.store.getDevice('zt-cam-1'))?.state).toBe('provisioned');
    // the birth certificate cannot enrol it again (the hole claim certificates leave elsewhere)
    expect(await connackCode(ts.mqttUrl, { clientId: 'zt-cam-1', key: birth.key, cert: birth.cert, ca: ts.running.ca.rootPem })).toBe(5);
  });

  it('refuses a birth certificate from an unknown CA, a serial not on the allowlist, an unregistered device and another tenant’s device', async () => {
    const connect = (id: string, b: { key: string; cert: string }) => connackCode(ts.mqttUrl, { clientId: id, key: b.key, cert: b.cert, ca: ts.running.ca.rootPem });
    await register(maker, 'zt-cam-2', '0b0b');
    const before = await snapshotDevice(ts.running, 'zt-cam-2');
    expect(await connect('zt-cam-2', birthCert('rogue', 'zt-cam-2', '0b0b'))).toBe(5); // unknown CA
    expect(await connect('zt-cam-2', birthCert('acme', 'zt-cam-2', '0c0c'))).toBe(5); // serial not allowlisted
    expect(await connect('zt-nobody', birthCert('acme', 'zt-nobody', '0d0d'))).toBe(5); // not registered
    const other = await ts.tenant('other-maker');
    await register(other, 'zt-cam-9', '0e0e'); // allowlisted by a tenant that does not trust acme
    expect(await connect('zt-cam-9', birthCert('acme', 'zt-cam-9', '0e0e'))).toBe(5);
    // a device's birth certificate used with another device's client id
    expect(await connect('zt-cam-2', birthCert('acme', 'zt-cam-3', '0b0b'))).toBe(5);
    expect(await snapshotDevice(ts.running, 'zt-cam-2')).toEqual(before);
    expect((await ts.running.store.getDevice('zt-cam-9'))?.state).toBe('registered');
  });

  it('asks the pre-provisioning webhook, which may deny, and fails closed when it does not answer in time', async () => {
    let mode: 'deny' | 'slow' | 'allow' = 'deny';
    const asked: Record<string, unknown>[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        asked.push({ ...JSON.parse(body), signature: req.headers['x-provisiond-signature'] });
        if (mode === 'slow') return void setTimeout(() => res.end('{"allow":true}'), 1500);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(mode === 'deny' ? { allow: false, reason: 'not sold yet' } : { allow: true }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/check`;
      const patch = await ts.running.api.inject({ method: 'PATCH', url: '/v1/tenant', headers: auth(maker.admin), payload: { preprovisionWebhook: { url, secret: 'preprovision-secret-123', timeoutMs: 300 } } });
      expect(patch.statusCode).toBe(200);
      expect(patch.body).not.toContain('preprovision-secret-123');
      await register(maker, 'zt-cam-4', '4444');
      const birth = birthCert('acme', 'zt-cam-4', '4444');
      const before = await snapshotDevice(ts.running, 'zt-cam-4');

      expect(await enroll('zt-cam-4', birth)).toMatchObject({ rejected: { code: 'BIRTH_DENIED', message: 'not sold yet' } });
      expect(asked.at(-1)).toMatchObject({ tenantId: 'maker', deviceId: 'zt-cam-4', model: 'camera', birthSerial: '4444', manufacturerCa: 'acme-fab', signature: expect.stringMatching(/^sha256=/) });
      mode = 'slow';
      expect(await enroll('zt-cam-4', birth)).toMatchObject({ rejected: { code: 'BIRTH_DENIED', message: expect.stringContaining('in time') } });
      expect(await snapshotDevice(ts.running, 'zt-cam-4')).toEqual(before);
      mode = 'allow';
      expect(await enroll('zt-cam-4', birth)).toHaveProperty('accepted');
      await ts.running.api.inject({ method: 'PATCH', url: '/v1/tenant', headers: auth(maker.admin), payload: { preprovisionWebhook: null } });
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('only CA certificates can be registered as manufacturer CAs', async () => {
    const leaf = birthCert('acme', 'not-a-ca', '99');
    const res = await ts.running.api.inject({ method: 'POST', url: '/v1/tenant/manufacturer-cas', headers: auth(maker.admin), payload: { id: 'leaf', name: 'x', certificate: leaf.cert } });
    expect(res.statusCode).toBe(400);
    expect((res.json() as { code: string }).code).toBe('MANUFACTURER_CA_INVALID');
    const viewer = await ts.running.api.inject({ method: 'POST', url: '/v1/tenant/manufacturer-cas', headers: auth(maker.viewer), payload: { id: 'x', name: 'x', certificate: leaf.cert } });
    expect(viewer.statusCode).toBe(403);
  });

  it('removing a manufacturer CA the tenant does not trust is a 404 that changes nothing', async () => {
    const before = (await ts.running.api.inject({ method: 'GET', url: '/v1/tenant', headers: auth(maker.admin) })).json() as { manufacturerCas?: Array<{ id: string }> };
    expect(before.manufacturerCas?.map((c) => c.id)).toContain('acme-fab');
    const res = await ts.running.api.inject({ method: 'DELETE', url: '/v1/tenant/manufacturer-cas/never-added', headers: auth(maker.admin) });
    expect(res.statusCode).toBe(404);
    expect((res.json() as { code: string }).code).toBe('MANUFACTURER_CA_NOT_FOUND');
    const after = (await ts.running.api.inject({ method: 'GET', url: '/v1/tenant', headers: auth(maker.admin) })).json();
    expect(after).toStrictEqual(before);
  });
});

