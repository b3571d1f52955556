/**
 * The whole path on real parts: HTTP claim, MQTT over TLS, CSR, X.509 certificate, mutual-TLS
 * reconnect, signed config with an encrypted Wi-Fi secret, acknowledgement, recorded state.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { Device, DeviceEvent } from '../../schemas/types.js';
import { registerAndClaim } from '../helpers/device.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { waitUntil } from '../helpers/wait.js';

let ts: TestService;
beforeAll(async () => {
  ts = await startTestService();
});
afterAll(async () => {
  await ts?.stop();
});

describe('end to end over real TLS', () => {
  it('takes a device from registered to provisioned and records every step', async () => {
    const { id, bootstrap } = await registerAndClaim(ts);
    expect(bootstrap.mqttUrl).toBe(`mqtts://localhost:${ts.running.mqttPort}`);
    const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap });
    try {
      await device.run();

      // the service's own record, through the API
      const res = await ts.running.api.inject({ url: `/v1/devices/${id}`, headers: { authorization: `Bearer ${ts.keys.viewer}` } });
      expect(res.statusCode).toBe(200);
      const view = res.json() as Device & Record<string, unknown>;
      expect(view.state).toBe('provisioned');
      expect(view.owner).toBe('alice');
      expect(view.config?.items.map((i) => [i.id, i.status])).toEqual([
        ['network', 'applied'],
        ['security', 'applied'],
      ]);
      expect(view).not.toHaveProperty('claimCodeHash');
      expect(view).not.toHaveProperty('claimNetwork');
      expect(view).not.toHaveProperty('bootstrapJti');

      // its certificate chains to the CA, checked by openssl
      const cert = new X509Certificate(device.certificatePem);
      expect(cert.serialNumber.toLowerCase()).toBe(view.certificateSerial);
      const dir = mkdtempSync(join(tmpdir(), 'verify-'));
      try {
        writeFileSync(join(dir, 'root.pem'), ts.running.ca.rootPem);
        writeFileSync(join(dir, 'issuing.pem'), ts.running.ca.chainPems[0]!);
        writeFileSync(join(dir, 'device.pem'), device.certificatePem);
        const out = execFileSync('openssl', ['verify', '-CAfile', 'root.pem', '-untrusted', 'issuing.pem', 'device.pem'], { cwd: dir }).toString();
        expect(out.trim()).toBe('device.pem: OK');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      expect(cert.subject).toContain(`CN=${id}`);
      expect(cert.subjectAltName).toBe(`URI:urn:provisiond:device:${id}`);

      // the store holds its history, in order
      const history = await ts.running.api.inject({ url: `/v1/devices/${id}/history`, headers: { authorization: `Bearer ${ts.keys.viewer}` } });
      const events = (history.json() as { items: DeviceEvent[] }).items;
      // the network item is an "await" item: acknowledged on its own, first; then the rest
      expect(events.map((e) => e.type)).toEqual(['registered', 'claimed', 'identity_issued', 'config_delivered', 'config_acknowledged', 'config_acknowledged', 'provisioned']);
      expect(events.filter((e) => e.type === 'config_acknowledged').map((e) => e.reason)).toEqual(['network=applied', 'security=applied']);
      expect(events.filter((e) => e.to).map((e) => e.to)).toEqual(['registered', 'claimed', 'identity_issued', 'configuring', 'provisioned']);
      expect(events[2]!.actor).toBe(`device:${id}`);
      const certs = await ts.running.store.listCertificates(id);
      expect(certs).toHaveLength(1);
      expect(certs[0]!.status).toBe('active');
      // the Wi-Fi secret is stored only sealed (AES-256-GCM), never in clear
      const stored = await ts.running.store.getDevice(id);
      expect(JSON.stringify(stored)).not.toContain('correct horse battery');
      expect(stored?.network?.sealedSecret).toMatch(/^v1\./);
    } finally {
      await device.stop();
    }
  });

  it('provisions several devices concurrently, each with its own identity (half present certificate + issuing CA, §8, and subscribe in two packets, §9)', async () => {
    const claims = await Promise.all(Array.from({ length: 10 }, () => registerAndClaim(ts)));
    const devices = claims.map((c, i) => new SimDevice({ deviceId: c.id, model: i % 2 ? 'camera' : 'thermostat', bootstrap: c.bootstrap, presentChain: i % 2 === 0, splitSubscribe: i % 2 === 0 }));
    try {
      await Promise.all(devices.map((d) => d.run()));
      const serials = new Set(devices.map((d) => new X509Certificate(d.certificatePem).serialNumber));
      expect(serials.size).toBe(10);
      for (const c of claims) expect((await ts.running.store.getDevice(c.id))?.state).toBe('provisioned');
    } finally {
      await Promise.all(devices.map((d) => d.stop()));
    }
  });

  it('re-delivers the configuration to a resumed persistent session that does not subscribe again', async () => {
    const { id, bootstrap } = await registerAndClaim(ts);
    const enrolled = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap });
    await enrolled.enroll();
    const { connectOperational, nextJson } = await import('../helpers/device.js');
    const opts = { clean: false };
    let client = await connectOperational(ts, id, enrolled.keyPem, enrolled.certificatePem, opts);
    let jws = nextJson<string>(client, `devices/${id}/config`);
    await client.subscribeAsync(`devices/${id}/config`, { qos: 1 });
    await jws;
    await client.endAsync();

    client = await connectOperational(ts, id, enrolled.keyPem, enrolled.certificatePem, opts);
    try {
      jws = nextJson<string>(client, `devices/${id}/config`);
      expect(String(await jws).split('.')).toHaveLength(3);
    } finally {
      await client.endAsync();
    }
  });

  it('re-delivers the configuration on reconnect until it is acknowledged', async () => {
    const { id, bootstrap } = await registerAndClaim(ts);
    const broken = new SimDevice({ deviceId: id, model: 'camera', bootstrap, broken: true });
    await broken.enroll();
    await broken.configure(); // receives the config, never acknowledges
    await waitUntil(async () => (await ts.running.store.getDevice(id))?.state === 'configuring', 'the config was delivered');
    const keyPem = broken.keyPem;
    const certPem = broken.certificatePem;
    await broken.stop();

    // the same device (same key and certificate), now healthy, reconnects and gets it again
    const { connectOperational, nextJson } = await import('../helpers/device.js');
    const client = await connectOperational(ts, id, keyPem, certPem);
    try {
      await client.subscribeAsync(`devices/${id}/state`, { qos: 1 });
      const jws = nextJson<string>(client, `devices/${id}/config`);
      await client.subscribeAsync(`devices/${id}/config`, { qos: 1 });
      const doc = JSON.parse(Buffer.from(String(await jws).split('.')[1]!, 'base64url').toString()) as { version: number };
      const state = nextJson<{ state: string }>(client, `devices/${id}/state`);
      await client.publishAsync(
        `devices/${id}/config/ack`,
        JSON.stringify({ version: doc.version, items: [{ id: 'network', status: 'applied' }, { id: 'security', status: 'applied' }] }),
        { qos: 1 },
      );
      expect((await state).state).toBe('provisioned');
    } finally {
      await client.endAsync();
    }
  });
});
