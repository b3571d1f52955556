/**
 * Key protection on a real service process configured as an operator would (PROVISIOND_* env):
 * the CA passphrase (env or file) encrypts every key and secret under the data directory, the
 * service provisions devices with it, plaintext keys of an existing installation are encrypted
 * on the first start with a passphrase (logged and audited) and devices keep working, and a wrong
 * or missing passphrase, a too short one or a key or secret readable by others stops the start
 * with exit code 78 and a coded message that never shows the passphrase.
 */
import crypto from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { AuditEntry, ClaimResponse } from '../../schemas/types.js';
import { startServiceProcess, type ServiceProcess } from '../helpers/process.js';
import { ENCRYPTED_PRIVATE_KEY_PEM_HEADER, PRIVATE_KEY_PEM_HEADER } from '../helpers/pem.js';

const PASSPHRASE = `pp-${crypto.randomBytes(16).toString('hex')}`;
const ADMIN = `admin-${crypto.randomBytes(20).toString('hex')}`;
const KEY_FILES = ['ca/root.key', 'ca/issuing.key', 'ca/mqtt-server.key', 'ca/config-signer.key'];
const SECRET_FILES = ['secrets/claim-code-pepper', 'secrets/bootstrap-token-key', 'secrets/network-secret-key'];

const dirs: string[] = [];
const running: ServiceProcess[] = [];
const sims: SimDevice[] = [];

async function dataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'provisiond-keyprot-'));
  dirs.push(dir);
  return dir;
}

async function start(dir: string, settings: Record<string, unknown> = {}): Promise<ServiceProcess> {
  const p = await startServiceProcess({ name: 'keys', dataDir: dir, settings: { adminApiKey: ADMIN, ...settings } });
  running.push(p);
  return p;
}

/** The start fails: the error text (exit code and output of the process). */
async function startFails(dir: string, settings: Record<string, unknown>): Promise<string> {
  try {
    const p = await start(dir, settings);
    await p.stop();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('the service started');
}

/** Registers, claims and provisions one device through the process; returns the simulated device. */
async function provision(p: ServiceProcess, id: string): Promise<SimDevice> {
  const claimCode = `code-${id}-${crypto.randomBytes(6).toString('hex')}`;
  expect((await p.request('POST', '/v1/devices', { key: ADMIN, body: { id, model: 'thermostat', claimCode } })).status).toBe(201);
  const claim = await p.request<ClaimResponse>('POST', '/v1/claims', {
    key: ADMIN,
    body: { claimCode, owner: 'o', site: 's', network: { wifi: { ssid: 'n', security: 'wpa2-psk', secret: 'wifi-secret-value' }, ipv4: { mode: 'dhcp' } } },
  });
  expect(claim.status, claim.text).toBe(201);
  const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: claim.body.bootstrap! });
  sims.push(device);
  await device.run();
  return device;
}

/** The same device (key and certificate) connecting to a restarted process (a new port). */
async function reconnectTo(p: ServiceProcess, dir: string, device: SimDevice): Promise<SimDevice> {
  const again = new SimDevice({
    deviceId: device.deviceId,
    model: 'thermostat',
    broker: { mqttUrl: p.mqttUrl, caCertificate: await readFile(join(dir, 'ca/root.pem'), 'utf8') },
    identity: { keyPem: device.keyPem, certPem: device.certificatePem, chainPems: [] },
  });
  sims.push(again);
  await again.reconnect();
  return again;
}

afterAll(async () => {
  await Promise.all(sims.map((d) => d.stop()));
  await Promise.all(running.map((p) => p.stop()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('with ca.keyPassphrase (PROVISIOND_CA__KEY_PASSPHRASE)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await dataDir();
  });

  it('writes every key and secret encrypted, and provisions devices', async () => {
    const p = await start(dir, { ca: { keyPassphrase: PASSPHRASE } });
    const device = await provision(p, 'enc-1');
    expect((await p.request<{ state: string }>('GET', '/v1/devices/enc-1', { key: ADMIN })).body.state).toBe('provisioned');
    for (const f of KEY_FILES) expect(await readFile(join(dir, f), 'utf8'), f).toMatch(new RegExp(`^${ENCRYPTED_PRIVATE_KEY_PEM_HEADER}\n`));
    for (const f of SECRET_FILES) expect(await readFile(join(dir, f), 'utf8'), f).toMatch(/^provisiond-secret:v1:/);
    // what the service signs with is the encrypted key: the config signer decrypts to the key of its certificate
    const signer = crypto.createPrivateKey({ key: await readFile(join(dir, 'ca/config-signer.key'), 'utf8'), passphrase: PASSPHRASE });
    expect(new crypto.X509Certificate(await readFile(join(dir, 'ca/config-signer.pem'), 'utf8')).checkPrivateKey(signer)).toBe(true);
    expect(p.output()).not.toContain(PASSPHRASE);
    await device.stop();
    expect((await p.stop()).code).toBe(0);
  });

  it('starts again with the passphrase from a file (ca.keyPassphraseFile); the device reconnects with its certificate', async () => {
    const file = join(dir, '..', `${dir.split('/').pop()}-passphrase`);
    await writeFile(file, `${PASSPHRASE}\n`, { mode: 0o600 });
    dirs.push(file);
    const p = await start(dir, { ca: { keyPassphraseFile: file } });
    const device = await reconnectTo(p, dir, sims.find((d) => d.deviceId === 'enc-1')!);
    expect(device.client?.connected).toBe(true);
    await device.stop();
    expect((await p.stop()).code).toBe(0);
  });

  it('refuses a wrong or missing passphrase: exit 78, a coded message naming the file, never the passphrase', async () => {
    const wrong = `wrong-${PASSPHRASE}`;
    const refused = await startFails(dir, { ca: { keyPassphrase: wrong } });
    expect(refused).toContain('code 78');
    expect(refused).toMatch(/provisiond: CA_KEY_PASSPHRASE_INVALID: \S+\/ca\/root\.key cannot be decrypted with the configured ca\.keyPassphrase/);
    expect(refused).not.toContain(wrong);
    expect(refused).not.toContain(PASSPHRASE);

    const missing = await startFails(dir, {});
    expect(missing).toContain('code 78');
    expect(missing).toMatch(/provisiond: CA_KEY_PASSPHRASE_REQUIRED: \S+\/ca\/root\.key is encrypted; set ca\.keyPassphrase \(PROVISIOND_CA__KEY_PASSPHRASE\)/);

    const short = await startFails(dir, { ca: { keyPassphrase: 'short-pp' } });
    expect(short).toContain('code 78');
    expect(short).toMatch(/CONFIG_INVALID: invalid configuration:\n\s+- ca\.keyPassphrase: must NOT have fewer than 12 characters \(from env PROVISIOND_CA__KEY_PASSPHRASE\)/);
    expect(short).not.toContain('short-pp');

    const both = await startFails(dir, { ca: { keyPassphrase: PASSPHRASE, keyPassphraseFile: '/nonexistent' } });
    expect(both).toMatch(/CONFIG_INVALID: .*ca\.keyPassphrase and ca\.keyPassphraseFile are both set/s);
    expect(both).not.toContain(PASSPHRASE);
    expect(await startFails(dir, { ca: { keyPassphraseFile: join(dir, 'no-such-file') } })).toMatch(/CONFIG_FILE_UNREADABLE: cannot read ca\.keyPassphraseFile \S+no-such-file: ENOENT/);
  });

  it('refuses a key or a secret readable by group or others, naming the file and the chmod to run', async () => {
    for (const f of ['ca/issuing.key', 'ca/mqtt-server.key', 'secrets/network-secret-key']) {
      const file = join(dir, f);
      await chmod(file, 0o644);
      const refused = await startFails(dir, { ca: { keyPassphrase: PASSPHRASE } });
      expect(refused, f).toContain('code 78');
      expect(refused, f).toMatch(f.startsWith('ca/') ? /provisiond: CA_KEY_PERMISSIONS: / : /provisiond: SECRET_PERMISSIONS: /);
      expect(refused, f).toContain(`run chmod 600 ${file}`);
      await chmod(file, 0o600);
    }
  });
});

describe('an installation with plaintext keys', () => {
  it('encrypts them on the first start with a passphrase (logged, audited); provisioned devices keep working', async () => {
    const dir = await dataDir();
    const plain = await start(dir);
    expect(plain.output()).toContain('stored unencrypted; set ca.keyPassphrase');
    const device = await provision(plain, 'mig-1');
    await device.stop();
    await plain.stop();
    const before = await Promise.all(KEY_FILES.map((f) => readFile(join(dir, f), 'utf8')));
    for (const pem of before) expect(pem).toContain(PRIVATE_KEY_PEM_HEADER);
    const publicKeys = before.map((pem) => crypto.createPublicKey(pem).export({ type: 'spki', format: 'pem' }));

    const p = await start(dir, { ca: { keyPassphrase: PASSPHRASE } });
    const after = await Promise.all(KEY_FILES.map((f) => readFile(join(dir, f), 'utf8')));
    after.forEach((pem, i) => {
      expect(pem, KEY_FILES[i]).toContain(ENCRYPTED_PRIVATE_KEY_PEM_HEADER);
      expect(crypto.createPublicKey(crypto.createPrivateKey({ key: pem, passphrase: PASSPHRASE })).export({ type: 'spki', format: 'pem' })).toBe(publicKeys[i]);
    });
    for (const f of SECRET_FILES) expect(await readFile(join(dir, f), 'utf8'), f).toMatch(/^provisiond-secret:v1:/);
    const logged = p.output().split('\n').filter((l) => l.includes('encrypted a plaintext key file'));
    expect(logged).toHaveLength(KEY_FILES.length + SECRET_FILES.length);
    const audit = await p.request<{ items: AuditEntry[] }>('GET', '/v1/audit?action=key.encrypt&limit=100', { key: ADMIN });
    expect(audit.body.items.map((e) => e.target).sort()).toStrictEqual([...KEY_FILES, ...SECRET_FILES].map((f) => `key:${f}`).sort());
    expect(audit.body.items.every((e) => e.actor === 'system' && e.outcome === 'success' && e.tenantId === 'default')).toBe(true);

    // the device provisioned before the migration: same CA, its certificate still works
    expect((await reconnectTo(p, dir, device)).client?.connected).toBe(true);
    await provision(p, 'mig-2');
    expect(p.output()).not.toContain(PASSPHRASE);
  });
});
