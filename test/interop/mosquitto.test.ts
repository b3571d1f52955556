/**
 * Interop: a device made only of mosquitto_sub / mosquitto_rr, openssl, jq, xxd and coreutils
 * (test/interop/mosquitto-device.sh, written from docs/protocol.md) provisions against a real
 * service. Proves the protocol document is complete enough to implement without provisiond code.
 *
 * Needs the Debian packages mosquitto-clients, openssl, jq and xxd. CI installs them; the tests
 * are skipped only when mosquitto_pub or openssl is missing (a missing jq or xxd makes the script
 * exit 2 naming the tool, so the test fails loudly instead of passing vacuously).
 */
import { execFile, execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { ClaimResponse } from '../../schemas/types.js';
import { connectBootstrap, nextJson, opensslCsrForKey, register } from '../helpers/device.js';
import { missingTools } from '../helpers/tools.js';
import { snapshotDevice, startTestService, type TestService } from '../helpers/service.js';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'mosquitto-device.sh');

const missing = missingTools(['mosquitto_pub', 'openssl']);
const skipReason = `skipped: ${missing.join(' and ')} not installed (apt-get install mosquitto-clients openssl jq xxd)`;
if (missing.length > 0) console.warn(`mosquitto interop tests ${skipReason}`);

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** KEY=value lines of stdout. */
  out: Record<string, string>;
}

/** Runs the shell device without blocking the event loop (the service lives in this process). */
function runDevice(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      [SCRIPT, ...args],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmpdir(), ...env }, timeout: 60_000, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        const out: Record<string, string> = {};
        for (const line of stdout.split('\n')) {
          const eq = line.indexOf('=');
          if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
        }
        resolve({ code, stdout, stderr, out });
      },
    );
  });
}

let ts: TestService;
let dir: string;
beforeAll(async () => {
  if (missing.length > 0) return;
  ts = await startTestService();
  dir = mkdtempSync(join(tmpdir(), 'interop-'));
});
afterAll(async () => {
  await ts?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Registers a device and claims it with a WPA2 network; returns the claim response. */
async function claimWithWifi(secret: string): Promise<ClaimResponse & { bootstrap: NonNullable<ClaimResponse['bootstrap']> }> {
  const { claimCode } = await register(ts);
  const res = await ts.running.api.inject({
    method: 'POST',
    url: '/v1/claims',
    headers: { authorization: `Bearer ${ts.keys.installer}` },
    payload: {
      claimCode,
      owner: 'interop',
      site: 'lab',
      network: { wifi: { ssid: 'interop-net', security: 'wpa2-psk', secret }, ipv4: { mode: 'dhcp' } },
    },
  });
  expect(res.statusCode, res.body).toBe(201);
  return res.json() as ClaimResponse & { bootstrap: NonNullable<ClaimResponse['bootstrap']> };
}

function writeBootstrap(name: string, bootstrap: NonNullable<ClaimResponse['bootstrap']>): string {
  const file = join(dir, `${name}.bootstrap.json`);
  writeFileSync(file, JSON.stringify(bootstrap), { mode: 0o600 });
  return file;
}

describe(`a device made of mosquitto clients and openssl${missing.length > 0 ? ` (${skipReason})` : ''}`, () => {
  it.skipIf(missing.length > 0)(`provisions end to end and decrypts the Wi-Fi secret`, { timeout: 90_000 }, async () => {
    const secret = `interop ${Math.random().toString(36).slice(2, 12)} pass`;
    const { device, bootstrap } = await claimWithWifi(secret);
    const rootFile = join(dir, `${device.id}.root.pem`);
    writeFileSync(rootFile, bootstrap.caCertificate);
    const workdir = join(dir, device.id);

    const run = await runDevice([], {
      MQTT_URL: bootstrap.mqttUrl,
      DEVICE_ID: bootstrap.clientId,
      BOOTSTRAP_TOKEN: bootstrap.token,
      ROOT_CA: rootFile,
      DEVICE_TIMEOUT: '15',
      DEVICE_WORKDIR: workdir,
    });
    expect(run.code, `exit ${run.code}\n${run.stderr}`).toBe(0);
    expect(run.out.WIFI_SSID).toBe('interop-net');
    expect(run.out.WIFI_SECRET).toBe(secret);
    expect(run.out.STATE).toBe('provisioned');

    // the service's record agrees
    const stored = await ts.running.store.getDevice(device.id);
    expect(stored?.state).toBe('provisioned');
    expect(stored?.config?.items.map((i) => [i.id, i.status])).toEqual([
      ['network', 'applied'],
      ['security', 'applied'],
    ]);
    expect(stored?.certificateSerial).toBe(run.out.CERT_SERIAL);

    // the certificate the device holds is the one recorded, for the key the device made
    const certs = await ts.running.store.listCertificates(device.id);
    expect(certs).toHaveLength(1);
    expect(certs[0]!.serial).toBe(run.out.CERT_SERIAL);
    expect(certs[0]!.status).toBe('active');
    const held = new X509Certificate(readFileSync(join(workdir, 'device.crt')));
    expect(held.raw.equals(new X509Certificate(certs[0]!.pem).raw)).toBe(true);
    expect(held.checkPrivateKey(createPrivateKey(readFileSync(join(workdir, 'device.key'))))).toBe(true);
  });

  it.skipIf(missing.length > 0)(`exits non-zero on an already-used token and changes nothing`, { timeout: 90_000 }, async () => {
    const { device, bootstrap } = await claimWithWifi('first device secret');
    // a device (the reference firmware) uses the token and provisions
    const sim = new SimDevice({ deviceId: device.id, model: 'thermostat', bootstrap });
    await sim.run();
    await sim.stop();
    const before = await snapshotDevice(ts.running, device.id);
    expect(before.device?.state).toBe('provisioned');

    const run = await runDevice(['--bootstrap', writeBootstrap(device.id, bootstrap)], { DEVICE_TIMEOUT: '10' });
    expect(run.code, run.stderr).toBe(3);
    expect(run.stderr).toContain('CONNACK 4');
    expect(run.stdout).toBe('');
    expect(await snapshotDevice(ts.running, device.id)).toEqual(before);
  });

  it.skipIf(missing.length > 0)(`exits non-zero when the used token comes with a new key (TOKEN_USED on csr/rejected)`, { timeout: 90_000 }, async () => {
    // the credential was consumed by a CSR for another key; the device is still identity_issued,
    // so the bootstrap connection is accepted but a CSR for a different key is not
    const { device, bootstrap } = await claimWithWifi('second device secret');
    const key = createPrivateKey({ key: execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']), format: 'pem' });
    const client = await connectBootstrap(ts, bootstrap);
    try {
      await client.subscribeAsync(`devices/${device.id}/csr/accepted`, { qos: 1 });
      const answer = nextJson(client, `devices/${device.id}/csr/accepted`);
      const csr = opensslCsrForKey(key.export({ type: 'pkcs8', format: 'pem' }).toString());
      await client.publishAsync(`devices/${device.id}/csr`, JSON.stringify({ requestId: 'first', csr }), { qos: 1 });
      await answer;
    } finally {
      await client.endAsync();
    }
    const before = await snapshotDevice(ts.running, device.id);
    expect(before.device?.state).toBe('identity_issued');

    const run = await runDevice(['--bootstrap', writeBootstrap(device.id, bootstrap)], { DEVICE_TIMEOUT: '10' });
    expect(run.code, run.stderr).toBe(4);
    expect(run.stderr).toContain('TOKEN_USED');
    expect(await snapshotDevice(ts.running, device.id)).toEqual(before);
  });
});
