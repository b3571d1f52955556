/**
 * Every bad MQTT input gets its coded answer (CONNACK return code, SUBACK 0x80, a JSON error on
 * csr/rejected or errors, or a closed connection for a forbidden publish) and changes nothing
 * stored.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { MqttCsrAccepted, MqttError } from '../../schemas/types.js';
import { ManualClock } from '../helpers/clock.js';
import {
  closed,
  connackCode,
  connectBootstrap,
  connectOperational,
  corruptSignature,
  nextJson,
  opensslCsr,
  opensslCsrForKey,
  registerAndClaim,
} from '../helpers/device.js';
import { snapshotDevice, startTestService, type TestService } from '../helpers/service.js';

let ts: TestService;
beforeAll(async () => {
  ts = await startTestService({ mqtt: { maxPayloadBytes: 4096 } });
});
afterAll(async () => {
  await ts?.stop();
});

async function csrExchange(client: MqttClient, id: string, payload: string | Buffer) {
  await client.subscribeAsync([`devices/${id}/csr/accepted`, `devices/${id}/csr/rejected`], { qos: 1 });
  const accepted = nextJson<MqttCsrAccepted>(client, `devices/${id}/csr/accepted`).then((v) => ({ accepted: v }));
  const rejected = nextJson<MqttError>(client, `devices/${id}/csr/rejected`).then((v) => ({ rejected: v }));
  accepted.catch(() => undefined);
  rejected.catch(() => undefined);
  await client.publishAsync(`devices/${id}/csr`, payload, { qos: 1 });
  return Promise.race([accepted, rejected]);
}

async function provisioned(t: TestService) {
  const c = await registerAndClaim(t);
  const device = new SimDevice({ deviceId: c.id, model: 'thermostat', bootstrap: c.bootstrap });
  await device.run();
  return { ...c, device };
}

/** A device that holds its certificate and has received its config, connected operationally and not acknowledging. */
async function configuring(t: TestService) {
  const c = await registerAndClaim(t);
  const device = new SimDevice({ deviceId: c.id, model: 'camera', bootstrap: c.bootstrap, broken: true });
  await device.enroll();
  const client = await connectOperational(t, c.id, device.keyPem, device.certificatePem);
  await client.subscribeAsync([`devices/${c.id}/errors`, `devices/${c.id}/state`], { qos: 1 });
  const doc = nextJson<string>(client, `devices/${c.id}/config`);
  await client.subscribeAsync(`devices/${c.id}/config`, { qos: 1 });
  await doc;
  return { ...c, client };
}

describe('bootstrap credential', () => {
  it('reused after the device is provisioned: CONNACK 4, nothing changes', async () => {
    const { id, bootstrap, device } = await provisioned(ts);
    await device.stop();
    const before = await snapshotDevice(ts.running, id);
    expect(await connackCode(ts.mqttUrl, { clientId: id, username: id, password: bootstrap.token, ca: bootstrap.caCertificate })).toBe(4);
    expect(await snapshotDevice(ts.running, id)).toEqual(before);
  });

  it('expired (pinned clock): CONNACK 4, nothing changes; a re-issued credential replaces it', async () => {
    const clock = new ManualClock();
    const t = await startTestService({ bootstrap: { tokenTtlSeconds: 60 } }, { clock });
    try {
      const { id, bootstrap } = await registerAndClaim(t);
      clock.advance(61_000); // stays inside the 5-minute back-dating of notBefore, so devices on real time accept the certificate
      const before = await snapshotDevice(t.running, id);
      expect(await connackCode(t.mqttUrl, { clientId: id, username: id, password: bootstrap.token, ca: bootstrap.caCertificate })).toBe(4);
      expect(await snapshotDevice(t.running, id)).toEqual(before);
      expect(before.token?.consumedAt).toBeUndefined();

      // the installer gets a new credential; the old one stays void, the new one provisions
      const res = await t.running.api.inject({ method: 'POST', url: `/v1/devices/${id}/bootstrap`, headers: { authorization: `Bearer ${t.keys.installer}` } });
      expect(res.statusCode).toBe(201);
      const fresh = (res.json() as { bootstrap: typeof bootstrap }).bootstrap;
      expect(fresh.token).not.toBe(bootstrap.token);
      clock.advance(61_000); // stays inside the 5-minute back-dating of notBefore, so devices on real time accept the certificate
      expect(await connackCode(t.mqttUrl, { clientId: id, username: id, password: fresh.token, ca: bootstrap.caCertificate })).toBe(4);
      const again = await t.running.api.inject({ method: 'POST', url: `/v1/devices/${id}/bootstrap`, headers: { authorization: `Bearer ${t.keys.installer}` } });
      const newest = (again.json() as { bootstrap: typeof bootstrap }).bootstrap;
      const device = new SimDevice({ deviceId: id, model: 'camera', bootstrap: newest });
      await device.run();
      await device.stop();
      expect(await connackCode(t.mqttUrl, { clientId: id, username: id, password: fresh.token, ca: bootstrap.caCertificate })).toBe(4);
      const late = await t.running.api.inject({ method: 'POST', url: `/v1/devices/${id}/bootstrap`, headers: { authorization: `Bearer ${t.keys.installer}` } });
      expect(late.statusCode).toBe(409);
      expect((late.json() as { code: string }).code).toBe('DEVICE_STATE_INVALID');
      expect((await t.running.store.listEvents(id)).filter((e) => e.type === 'bootstrap_reissued')).toHaveLength(2);
    } finally {
      await t.stop();
    }
  });

  it('presented for another device or with another client id: CONNACK 4 / 2', async () => {
    const a = await registerAndClaim(ts);
    const b = await registerAndClaim(ts);
    const ca = a.bootstrap.caCertificate;
    expect(await connackCode(ts.mqttUrl, { clientId: b.id, username: b.id, password: a.bootstrap.token, ca })).toBe(4);
    expect(await connackCode(ts.mqttUrl, { clientId: 'someone-else', username: a.id, password: a.bootstrap.token, ca })).toBe(2);
    expect(await connackCode(ts.mqttUrl, { clientId: a.id, username: a.id, password: 'not.a.jwt', ca })).toBe(4);
    expect(await connackCode(ts.mqttUrl, { clientId: a.id, ca })).toBe(4);
    expect((await ts.running.store.getDevice(a.id))?.state).toBe('claimed');
    expect((await ts.running.store.getDevice(b.id))?.state).toBe('claimed');
  });

  it('reused with another key while the first answer may be lost: TOKEN_USED; the same key gets the same certificate', async () => {
    const { id, bootstrap } = await registerAndClaim(ts);
    const first = opensslCsr('p256');
    let client = await connectBootstrap(ts, bootstrap);
    const one = await csrExchange(client, id, JSON.stringify({ requestId: 'r1', csr: first.csrPem }));
    await client.endAsync();
    expect('accepted' in one).toBe(true);
    const serial = (one as { accepted: MqttCsrAccepted }).accepted.serial;
    const before = await snapshotDevice(ts.running, id);

    client = await connectBootstrap(ts, bootstrap);
    const other = await csrExchange(client, id, JSON.stringify({ requestId: 'r2', csr: opensslCsr('p256').csrPem }));
    expect(other).toEqual({ rejected: { code: 'TOKEN_USED', message: expect.any(String), requestId: 'r2', topic: `devices/${id}/csr` } });
    const again = await csrExchange(client, id, JSON.stringify({ requestId: 'r3', csr: opensslCsrForKey(first.keyPem) }));
    await client.endAsync();
    expect((again as { accepted: MqttCsrAccepted }).accepted.serial).toBe(serial);
    expect(await snapshotDevice(ts.running, id)).toEqual(before);
  });
});

describe('CSR', () => {
  it('a bad signature: CSR_SIGNATURE_INVALID, nothing changes, and the credential still works', async () => {
    const { id, bootstrap } = await registerAndClaim(ts);
    const before = await snapshotDevice(ts.running, id);
    const client = await connectBootstrap(ts, bootstrap);
    try {
      const bad = await csrExchange(client, id, JSON.stringify({ requestId: 'bad', csr: corruptSignature(opensslCsr('p256').csrPem) }));
      expect(bad).toMatchObject({ rejected: { code: 'CSR_SIGNATURE_INVALID', requestId: 'bad' } });
      expect(await snapshotDevice(ts.running, id)).toEqual(before);
      const good = await csrExchange(client, id, JSON.stringify({ requestId: 'good', csr: opensslCsr('rsa2048').csrPem }));
      expect(good).toMatchObject({ accepted: { requestId: 'good' } });
    } finally {
      await client.endAsync();
    }
  });

  it("another device's key: KEY_IN_USE, nothing changes", async () => {
    const victim = await registerAndClaim(ts);
    const keys = opensslCsr('p256');
    let client = await connectBootstrap(ts, victim.bootstrap);
    expect(await csrExchange(client, victim.id, JSON.stringify({ requestId: 'v', csr: keys.csrPem }))).toHaveProperty('accepted');
    await client.endAsync();

    const clone = await registerAndClaim(ts);
    const before = await snapshotDevice(ts.running, clone.id);
    client = await connectBootstrap(ts, clone.bootstrap);
    try {
      const res = await csrExchange(client, clone.id, JSON.stringify({ requestId: 'c', csr: opensslCsrForKey(keys.keyPem, `/CN=${clone.id}`) }));
      expect(res).toMatchObject({ rejected: { code: 'KEY_IN_USE' } });
    } finally {
      await client.endAsync();
    }
    expect(await snapshotDevice(ts.running, clone.id)).toEqual(before);
  });

  it('malformed JSON, wrong schema, garbage CSR, oversized payload: coded rejections, nothing changes', async () => {
    const { id, bootstrap } = await registerAndClaim(ts);
    const before = await snapshotDevice(ts.running, id);
    const client = await connectBootstrap(ts, bootstrap);
    try {
      expect(await csrExchange(client, id, '{"requestId": "x", ')).toMatchObject({ rejected: { code: 'MALFORMED_JSON' } });
      expect(await csrExchange(client, id, JSON.stringify({ requestId: 'x', csr: 'short' }))).toMatchObject({ rejected: { code: 'SCHEMA_INVALID', requestId: 'x' } });
      expect(await csrExchange(client, id, JSON.stringify({ requestId: 's', csr: opensslCsr().csrPem, extra: 1 }))).toMatchObject({ rejected: { code: 'SCHEMA_INVALID' } });
      const garbage = `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.alloc(200, 7).toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
      expect(await csrExchange(client, id, JSON.stringify({ requestId: 'g', csr: garbage }))).toMatchObject({ rejected: { code: 'CSR_MALFORMED', requestId: 'g' } });
      expect(await csrExchange(client, id, Buffer.alloc(5000, 0x20))).toMatchObject({ rejected: { code: 'PAYLOAD_TOO_LARGE' } });
    } finally {
      await client.endAsync();
    }
    expect(await snapshotDevice(ts.running, id)).toEqual(before);
  });
});

describe('topics', () => {
  it("publishing to another device's topic closes the connection; the other device is untouched", async () => {
    const victim = await registerAndClaim(ts);
    const attacker = await provisioned(ts);
    const before = await snapshotDevice(ts.running, victim.id);
    const client = attacker.device.client!;
    const gone = closed(client);
    client.publish(`devices/${victim.id}/csr`, JSON.stringify({ requestId: 'x', csr: opensslCsr().csrPem }), { qos: 1 });
    await gone;
    expect(await snapshotDevice(ts.running, victim.id)).toEqual(before);
    await attacker.device.stop();
  });

  it("subscribing to another device's topics, wildcards or $SYS is refused with SUBACK 0x80", async () => {
    const victim = await registerAndClaim(ts);
    const { id, device } = await provisioned(ts);
    try {
      const filters = [`devices/${victim.id}/config`, `devices/${victim.id}/csr/accepted`, 'devices/+/config', '#', '$SYS/#', `devices/${id}/#`, `devices/${id}/state`];
      // mqtt.js rejects when any filter is refused; the SUBACK rides on the error
      const err = (await device.client!.subscribeAsync(filters, { qos: 1 }).catch((e: unknown) => e)) as { packet?: { granted: number[] } };
      expect(err.packet?.granted).toEqual([128, 128, 128, 128, 128, 128, 1]);
      expect(device.client!.connected).toBe(true);
    } finally {
      await device.stop();
    }
  });

  it('a bootstrap session may not acknowledge config or send telemetry: connection closed', async () => {
    const { id, bootstrap } = await registerAndClaim(ts);
    const client = await connectBootstrap(ts, bootstrap);
    const gone = closed(client);
    client.publish(`devices/${id}/telemetry`, '{}', { qos: 1 });
    await gone;
    expect((await ts.running.store.getDevice(id))?.state).toBe('claimed');
  });
});

describe('configuration acknowledgement', () => {
  it('for a version never sent, an unknown item, or malformed: coded error on errors, nothing changes', async () => {
    const { id, client } = await configuring(ts);
    try {
      const before = await snapshotDevice(ts.running, id);
      expect(before.device?.state).toBe('configuring');
      const send = async (payload: string) => {
        const err = nextJson<MqttError>(client, `devices/${id}/errors`);
        await client.publishAsync(`devices/${id}/config/ack`, payload, { qos: 1 });
        return err;
      };
      expect(await send(JSON.stringify({ version: 99, items: [{ id: 'network', status: 'applied' }] }))).toMatchObject({ code: 'CONFIG_VERSION_UNKNOWN', topic: `devices/${id}/config/ack` });
      expect(await send(JSON.stringify({ version: 1, items: [{ id: 'firmware', status: 'applied' }] }))).toMatchObject({ code: 'CONFIG_ITEM_UNKNOWN' });
      expect(await send(JSON.stringify({ version: 1, items: [{ id: 'network', status: 'done' }] }))).toMatchObject({ code: 'SCHEMA_INVALID' });
      expect(await send('not json')).toMatchObject({ code: 'MALFORMED_JSON' });
      expect(await send(JSON.stringify({ version: 1, items: [{ id: 'network', status: 'failed', error: 'x'.repeat(4100) }] }))).toMatchObject({ code: 'PAYLOAD_TOO_LARGE' });
      expect(await snapshotDevice(ts.running, id)).toEqual(before);
    } finally {
      await client.endAsync();
    }
  });

  it('partial and failed acknowledgements are recorded; provisioned only while every required item is applied', async () => {
    const { id, client } = await configuring(ts);
    try {
      const ack = async (items: unknown[]) => {
        const state = nextJson<{ state: string; pending: string[] }>(client, `devices/${id}/state`);
        await client.publishAsync(`devices/${id}/config/ack`, JSON.stringify({ version: 1, items }), { qos: 1 });
        return state;
      };
      // a required item failed: the device is "failed" (it tried and could not), with the reason kept
      expect(await ack([{ id: 'network', status: 'failed', error: 'AP not found' }])).toEqual({ state: 'failed', configVersion: 1, pending: ['network', 'security'] });
      expect((await ts.running.store.listEvents(id)).at(-1)).toMatchObject({ type: 'failed', from: 'configuring', to: 'failed' });
      expect(await ack([{ id: 'security', status: 'applied' }])).toEqual({ state: 'failed', configVersion: 1, pending: ['network'] });
      const dev = await ts.running.store.getDevice(id);
      expect(dev?.config?.items.find((i) => i.id === 'network')).toMatchObject({ status: 'failed', error: 'AP not found' });
      // applying it after all: provisioned
      expect(await ack([{ id: 'network', status: 'applied' }])).toEqual({ state: 'provisioned', configVersion: 1, pending: [] });
      // a repeated acknowledgement is harmless
      const events = (await ts.running.store.listEvents(id)).length;
      expect(await ack([{ id: 'network', status: 'applied' }])).toEqual({ state: 'provisioned', configVersion: 1, pending: [] });
      expect((await ts.running.store.listEvents(id)).length).toBe(events);
      // a required item reported failed after all: no longer provisioned
      expect(await ack([{ id: 'security', status: 'failed', error: 'TLS 1.3 unsupported' }])).toEqual({ state: 'failed', configVersion: 1, pending: ['security'] });
      expect((await ts.running.store.listEvents(id)).at(-1)).toMatchObject({ from: 'provisioned', to: 'failed' });
      // a required item merely pending again (failed -> applied is not needed): back to configuring via a partial ack
      expect(await ack([{ id: 'security', status: 'applied' }])).toEqual({ state: 'provisioned', configVersion: 1, pending: [] });
    } finally {
      await client.endAsync();
    }
  });
});

describe('operational identity', () => {
  it('a certificate from a foreign CA for the same device id: CONNACK 5', async () => {
    const { id, device } = await provisioned(ts);
    await device.stop();
    const dir = mkdtempSync(join(tmpdir(), 'foreign-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${id}`, '-days', '1', '-keyout', 'k.pem', '-out', 'c.pem'], { cwd: dir, stdio: 'pipe' });
      const code = await connackCode(ts.mqttUrl, { clientId: id, key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')), ca: ts.running.ca.rootPem });
      expect(code).toBe(5);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a device's valid certificate with another device's client id: CONNACK 2 (no client-id takeover)", async () => {
    const victim = await provisioned(ts);
    const attacker = await provisioned(ts);
    try {
      const code = await connackCode(ts.mqttUrl, { clientId: victim.id, key: attacker.device.keyPem, cert: attacker.device.certificatePem, ca: ts.running.ca.rootPem });
      expect(code).toBe(2);
      expect(victim.device.client?.connected).toBe(true);
    } finally {
      await victim.device.stop();
      await attacker.device.stop();
    }
  });
});

describe('service faults', () => {
  it('a store outage answers a coded STORE_UNAVAILABLE; the device retries and is provisioned afterwards', async () => {
    const t = await startTestService();
    try {
      const c = await configuring(t);
      const { client } = c;
      const ack = JSON.stringify({ version: 1, items: [{ id: 'network', status: 'applied' }, { id: 'security', status: 'applied' }] });

      await t.running.store.stop();
      const err = nextJson<MqttError>(client, `devices/${c.id}/errors`);
      await client.publishAsync(`devices/${c.id}/config/ack`, ack, { qos: 1 });
      expect(await err).toMatchObject({ code: 'STORE_UNAVAILABLE' });

      await t.running.store.start();
      const state = nextJson<{ state: string }>(client, `devices/${c.id}/state`);
      await client.publishAsync(`devices/${c.id}/config/ack`, ack, { qos: 1 });
      expect((await state).state).toBe('provisioned');
      await client.endAsync();
    } finally {
      await t.stop();
    }
  });
});
