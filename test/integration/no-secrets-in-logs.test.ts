/**
 * No secret ever reaches the logs. A real service process at logLevel trace, with the CA
 * passphrase set, goes through a full run: admin key, tenants (with a webhook secret), API keys,
 * devices registered with claim codes (one by one and imported), claims with Wi-Fi secrets,
 * bootstrap tokens over MQTT and EST, CSRs, certificates, config documents and pushes, renewal,
 * revocation, server-side key generation (PKCS#12 bundles and their passwords), a wrong claim code,
 * bad bootstrap tokens and a bad API key. Everything the process wrote (stdout and stderr) is then
 * searched for every secret in raw, base64, base64url, hex (binary ones) and JSON-escaped form.
 */
import crypto from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { ClaimResponse } from '../../schemas/types.js';
import { loadOrCreateSecret } from '../../src/provisioning/index.js';
import { estSimpleEnroll } from '../helpers/bootstrap.js';
import { connackCode, opensslCsr } from '../helpers/device.js';
import { startServiceProcess, type ServiceProcess } from '../helpers/process.js';
import { webhookReceiver } from '../helpers/webhook.js';

const PASSPHRASE = `ca-passphrase-${crypto.randomBytes(12).toString('hex')}`;
const ADMIN_KEY = `admin-key-${crypto.randomBytes(24).toString('hex')}`;

/** name -> secret value; everything here must be absent from the output in every form. */
const secrets = new Map<string, string>();
/** Binary secrets (keys): checked as base64, base64url and hex. */
const binary = new Map<string, Buffer>();
const remember = (name: string, value: string) => {
  expect(value.length, name).toBeGreaterThanOrEqual(8);
  secrets.set(name, value);
};

let dataDir: string;
let p: ServiceProcess;
let hook: Awaited<ReturnType<typeof webhookReceiver>>;
const sims: SimDevice[] = [];

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'provisiond-nosecrets-'));
  hook = await webhookReceiver();
  p = await startServiceProcess({
    name: 'secrets',
    dataDir,
    keepOutputChars: Infinity,
    settings: { logLevel: 'trace', adminApiKey: ADMIN_KEY, ca: { keyPassphrase: PASSPHRASE }, alerts: { webhookBaseDelayMs: 10 } },
  });
});
afterAll(async () => {
  await Promise.all(sims.map((d) => d.stop()));
  await p?.stop();
  await hook?.close();
  await rm(dataDir, { recursive: true, force: true });
});

/** Every form a secret may take in a log line. */
function forms(value: string): string[] {
  const out = new Set([value, JSON.stringify(value).slice(1, -1), Buffer.from(value, 'utf8').toString('base64'), Buffer.from(value, 'utf8').toString('base64url')]);
  // inside a larger encoded text (a Basic auth header, a JWT, a JSON document in base64) the
  // encoding depends on the secret's offset modulo 3: the full groups of each alignment
  for (const pad of ['', 'a', 'ab']) {
    const b64 = Buffer.from(pad + value, 'utf8').toString('base64');
    const inner = b64.slice(pad ? 4 : 0, -4);
    out.add(inner);
    out.add(inner.replace(/\+/g, '-').replace(/\//g, '_'));
  }
  return [...out].filter((f) => f.length >= 8);
}

function binaryForms(value: Buffer): string[] {
  return [value.toString('base64'), value.toString('base64url'), value.toString('hex'), value.toString('base64').replace(/=+$/, '')];
}

/** The base64 body lines of a PEM (each is itself secret material) and the DER in other encodings. */
function pemSecrets(name: string, pem: string): void {
  const body = pem.replace(/-----[^-]+-----/g, '').trim();
  const lines = body.split(/\r?\n/).filter((l) => l.length >= 32);
  lines.forEach((line, i) => secrets.set(`${name} (PEM line ${i + 1})`, line));
  binary.set(`${name} (DER)`, Buffer.from(body.replace(/\s+/g, ''), 'base64'));
}

describe('a full run at logLevel trace', () => {
  it('writes none of the secrets it handled, in any form', async () => {
    remember('CA passphrase', PASSPHRASE);
    remember('admin key', ADMIN_KEY);
    const req = async <T = Record<string, unknown>>(method: string, path: string, key: string, body?: unknown) => {
      const res = await p.request<T>(method, path, { key, ...(body !== undefined ? { body } : {}) });
      return res;
    };

    // tenants, with their first admin keys and a webhook secret
    const webhookSecret = `whsec-${crypto.randomBytes(16).toString('hex')}`;
    remember('webhook secret', webhookSecret);
    const tenant = await req<{ adminKey: { secret: string } }>('POST', '/v1/tenants', ADMIN_KEY, {
      id: 'leaky',
      name: 'Leaky Inc',
      serverKeyGeneration: true,
      webhook: { url: hook.url, secret: webhookSecret },
    });
    expect(tenant.status, tenant.text).toBe(201);
    const tenantAdmin = tenant.body.adminKey.secret;
    remember('tenant admin key', tenantAdmin);
    const keys: Record<string, string> = {};
    for (const role of ['factory', 'installer', 'viewer'] as const) {
      const res = await req<{ secret: string }>('POST', '/v1/admin/api-keys', tenantAdmin, { name: `${role} key`, role });
      expect(res.status).toBe(201);
      keys[role] = res.body.secret;
      remember(`${role} API key`, res.body.secret);
      remember(`${role} API key secret part`, res.body.secret.slice('pdk_0123456789abcdef_'.length));
    }

    // devices with claim codes: one by one and imported
    const devices = Array.from({ length: 4 }, (_, i) => ({ id: `leak-${i}`, claimCode: `CC-${crypto.randomBytes(10).toString('hex')}` }));
    for (const d of devices) remember(`claim code of ${d.id}`, d.claimCode);
    for (const d of devices.slice(0, 2)) expect((await req('POST', '/v1/devices', keys.factory!, { id: d.id, model: 'thermostat', claimCode: d.claimCode })).status).toBe(201);
    const imported = await req('POST', '/v1/devices/import', keys.factory!, { devices: devices.slice(2).map((d) => ({ id: d.id, model: 'thermostat', claimCode: d.claimCode })) });
    expect(imported.status, imported.text).toBe(200);

    // claims with Wi-Fi secrets: bootstrap tokens
    const boots: ClaimResponse['bootstrap'][] = [];
    for (const [i, d] of devices.entries()) {
      const wifi = `wifi-${i}-${crypto.randomBytes(8).toString('hex')}`;
      remember(`Wi-Fi secret ${i}`, wifi);
      const res = await req<ClaimResponse>('POST', '/v1/claims', keys.installer!, {
        claimCode: d.claimCode,
        owner: 'owner',
        site: 'site',
        network: { wifi: { ssid: `net-${i}`, security: 'wpa2-psk', secret: wifi }, ipv4: { mode: 'dhcp' } },
      });
      expect(res.status, res.text).toBe(201);
      remember(`bootstrap token ${i}`, res.body.bootstrap!.token);
      boots.push(res.body.bootstrap);
    }

    // a wrong claim code, a bad API key, bad bootstrap tokens over MQTT and EST
    const wrongCode = `CC-${crypto.randomBytes(10).toString('hex')}`;
    remember('wrong claim code', wrongCode);
    expect((await req('POST', '/v1/claims', keys.installer!, { claimCode: wrongCode, owner: 'o', site: 's' })).status).toBe(403);
    const badKey = `pdk_${crypto.randomBytes(8).toString('hex')}_${crypto.randomBytes(32).toString('base64url')}`;
    remember('bad API key', badKey);
    expect((await req('GET', '/v1/devices', badKey)).status).toBe(401);
    const [h, , s] = boots[0]!.token.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ sub: 'leak-0', jti: 'x', exp: 9e9 })).toString('base64url')}.${s}`;
    remember('forged bootstrap token', forged);
    const badToken = `not-a-token-${crypto.randomBytes(12).toString('hex')}`;
    remember('bad bootstrap token', badToken);
    for (const password of [forged, badToken]) {
      expect(await connackCode(p.mqttUrl, { clientId: 'leak-0', username: 'leak-0', password, ca: boots[0]!.caCertificate, protocolVersion: 4, reconnectPeriod: 0 })).not.toBe(0);
    }
    expect((await estSimpleEnroll(p.estPort!, { ...boots[1]!, token: badToken }, opensslCsr().csrPem)).status).toBe(401);

    // identities: three over MQTT (CSR, certificate, config with the Wi-Fi secret, acks), one over EST
    for (const [i, d] of devices.slice(0, 3).entries()) {
      const sim = new SimDevice({ deviceId: d.id, model: 'thermostat', bootstrap: boots[i]! });
      sims.push(sim);
      await sim.run();
      pemSecrets(`device key ${d.id}`, sim.keyPem);
    }
    const est = opensslCsr();
    pemSecrets('EST device key', est.keyPem);
    expect((await estSimpleEnroll(p.estPort!, boots[3]!, est.csrPem)).status).toBe(200);

    // config push, renewal, revocation
    expect((await req('POST', '/v1/devices/leak-0/config/push', tenantAdmin)).status).toBe(200);
    await sims[1]!.renew();
    pemSecrets('renewed device key', sims[1]!.keyPem);
    expect((await req('POST', '/v1/devices/leak-2/revoke', tenantAdmin, { reason: 'lost' })).status).toBe(200);

    // server-side key generation: bundles with their passwords
    const bundleCode = `CC-${crypto.randomBytes(10).toString('hex')}`;
    remember('claim code of leak-bundle', bundleCode);
    expect((await req('POST', '/v1/devices', keys.factory!, { id: 'leak-bundle', model: 'thermostat', claimCode: bundleCode })).status).toBe(201);
    const bundles = await req<{ results: { pkcs12: string; password: string }[] }>('POST', '/v1/factory/bundles', keys.factory!, { devices: ['leak-bundle'] });
    expect(bundles.status, bundles.text).toBe(200);
    remember('PKCS#12 password', bundles.body.results[0]!.password);
    remember('PKCS#12 bundle (start)', bundles.body.results[0]!.pkcs12.slice(0, 96));

    // audit and reads, as an operator would
    expect((await req('GET', '/v1/audit?limit=1000', tenantAdmin)).status).toBe(200);
    expect((await req('GET', '/v1/devices', keys.viewer!)).status).toBe(200);

    // the service's own keys and secrets, as they are in memory (decrypted with the passphrase)
    for (const name of ['root', 'issuing', 'mqtt-server', 'config-signer']) {
      const pem = await readFile(join(dataDir, 'ca', `${name}.key`), 'utf8');
      expect(pem).toContain('ENCRYPTED PRIVATE KEY');
      pemSecrets(`${name} key`, crypto.createPrivateKey({ key: pem, passphrase: PASSPHRASE }).export({ type: 'pkcs8', format: 'pem' }) as string);
    }
    for (const name of ['claim-code-pepper', 'bootstrap-token-key', 'network-secret-key']) {
      expect(await readFile(join(dataDir, 'secrets', name), 'utf8')).toMatch(/^provisiond-secret:v1:/);
      binary.set(name, await loadOrCreateSecret(join(dataDir, 'secrets'), name, { passphrase: PASSPHRASE }));
    }

    const stopped = await p.stop();
    expect(stopped.code).toBe(0);
    const output = p.output();
    // NOSECRETS_DUMP=<file>: keep what the process wrote, to read it
    if (process.env.NOSECRETS_DUMP) writeFileSync(process.env.NOSECRETS_DUMP, output);
    // it did log: keys generated, every request, the broker's and EST's refusals, debug lines
    expect(output.length).toBeGreaterThan(8_000);
    expect(output).toContain('"level":20');
    for (const msg of ['generated a key', 'incoming request', 'mqtt connect refused', 'est request refused', 'est certificate issued', 'webhook delivered']) expect(output).toContain(msg);

    const leaks: string[] = [];
    for (const [name, value] of secrets) {
      for (const form of forms(value)) if (output.includes(form)) leaks.push(`${name} (as ${form === value ? 'raw' : 'encoded'}): ...${excerpt(output, form)}...`);
    }
    for (const [name, value] of binary) {
      for (const form of binaryForms(value)) if (output.includes(form)) leaks.push(`${name}: ...${excerpt(output, form)}...`);
    }
    expect(leaks, leaks.join('\n')).toStrictEqual([]);
    expect(secrets.size).toBeGreaterThan(40);
  });
});

/** Where a form was found, with the secret itself masked. */
function excerpt(output: string, form: string): string {
  const at = output.indexOf(form);
  return `${output.slice(Math.max(0, at - 120), at)}<SECRET>${output.slice(at + form.length, at + form.length + 40)}`.replace(/\n/g, '\\n');
}
