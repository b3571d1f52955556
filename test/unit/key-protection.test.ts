/**
 * Keys and secrets at rest: encrypted PKCS#8 (checked by the openssl CLI) when a passphrase is
 * configured, plaintext ones encrypted in place on the first start with it, a missing or wrong
 * passphrase a coded refusal that names the file (never the passphrase), and a key or secret
 * readable by group or others refused with the chmod to run.
 */
import { execFileSync } from 'node:child_process';
import crypto, { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { CertificateAuthority, type CaKeyEvent, type CaOptions } from '../../src/ca/index.js';
import { loadConfig } from '../../src/config/index.js';
import { loadOrCreateSecret } from '../../src/provisioning/index.js';
import { ENCRYPTED_PRIVATE_KEY_PEM_HEADER, PRIVATE_KEY_PEM_HEADER } from '../helpers/pem.js';

const PASSPHRASE = 'tr0ub4dor-and-3-more-words';
const KEYS = ['root.key', 'issuing.key', 'mqtt-server.key', 'config-signer.key'];

let tmp: string;
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'provisiond-keys-'));
});
afterEach(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

const caDir = () => path.join(tmp, 'ca');

function options(extra: Partial<CaOptions> = {}): CaOptions {
  return { dir: caDir(), organization: 'Keys Test', deviceValidityDays: 30, clock: systemClock, ...extra };
}

/** A CA with its two service identities, as the service starts it; the key events it reported. */
async function startCa(extra: Partial<CaOptions> = {}): Promise<{ ca: CertificateAuthority; events: CaKeyEvent[] }> {
  const events: CaKeyEvent[] = [];
  const ca = new CertificateAuthority(options({ onKeyEvent: (e) => void events.push(e), ...extra }));
  await ca.start();
  await ca.serviceIdentity('mqtt-server', { kind: 'server', hostnames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  await ca.serviceIdentity('config-signer', { kind: 'signer', commonName: 'Keys Test Config Signer' });
  return { ca, events };
}

async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: Error & { code?: string }) => err,
  );
}

const read = (name: string) => fs.readFile(path.join(caDir(), name), 'utf8');
const spki = (pem: string, passphrase?: string) =>
  crypto.createPublicKey(crypto.createPrivateKey(passphrase ? { key: pem, passphrase } : pem)).export({ type: 'spki', format: 'der' }).toString('hex');

describe('CA and service identity keys with ca.keyPassphrase', () => {
  it('writes every key as encrypted PKCS#8 (PBES2: PBKDF2 + AES-256-CBC) that openssl decrypts with the passphrase, mode 0600', async () => {
    const { ca, events } = await startCa({ keyPassphrase: PASSPHRASE });
    expect(events.map((e) => [e.action, e.name])).toStrictEqual([
      ['key.generate', 'root'],
      ['key.generate', 'issuing'],
      ['key.generate', 'mqtt-server'],
      ['key.generate', 'config-signer'],
    ]);
    for (const name of KEYS) {
      const pem = await read(name);
      expect(pem.startsWith(`${ENCRYPTED_PRIVATE_KEY_PEM_HEADER}\n`), name).toBe(true);
      expect((await fs.stat(path.join(caDir(), name))).mode & 0o777, name).toBe(0o600);
      const asn1 = execFileSync('openssl', ['asn1parse', '-in', path.join(caDir(), name)], { encoding: 'utf8' });
      expect(asn1).toContain(':PBES2');
      expect(asn1).toContain(':PBKDF2');
      expect(asn1).toContain(':aes-256-cbc');
      // openssl decrypts it with the passphrase, and refuses without / with a wrong one
      const clear = execFileSync('openssl', ['pkey', '-in', path.join(caDir(), name), '-passin', `pass:${PASSPHRASE}`], { encoding: 'utf8' });
      expect(clear).toContain(PRIVATE_KEY_PEM_HEADER);
      expect(() => execFileSync('openssl', ['pkey', '-in', path.join(caDir(), name), '-passin', 'pass:wrong passphrase'], { stdio: 'pipe' })).toThrow();
    }
    // the decrypted issuing key is the one of the issuing certificate
    const issuing = new X509Certificate(ca.issuingPem);
    expect(issuing.checkPrivateKey(crypto.createPrivateKey({ key: await read('issuing.key'), passphrase: PASSPHRASE }))).toBe(true);

    // the next start with the same passphrase loads everything and writes nothing new
    const before = await Promise.all(KEYS.map(read));
    const again = await startCa({ keyPassphrase: PASSPHRASE });
    expect(again.events).toStrictEqual([]);
    expect(again.ca.issuingPem).toBe(ca.issuingPem);
    expect(await Promise.all(KEYS.map(read))).toStrictEqual(before);
    // service identities come back decrypted in memory (for TLS and signing)
    const server = await again.ca.serviceIdentity('mqtt-server', { kind: 'server', hostnames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    expect(server.keyPem).toContain(PRIVATE_KEY_PEM_HEADER);
    expect(new X509Certificate(server.certPem).checkPrivateKey(crypto.createPrivateKey(server.keyPem))).toBe(true);
  });

  it('refuses a wrong or missing passphrase with a coded error naming the file, never the passphrase or key material', async () => {
    await startCa({ keyPassphrase: PASSPHRASE });
    const wrong = await rejection(new CertificateAuthority(options({ keyPassphrase: 'not the right passphrase' })).start());
    expect(wrong.code).toBe('CA_KEY_PASSPHRASE_INVALID');
    expect(wrong.message).toContain(path.join(caDir(), 'root.key'));
    expect(wrong.message).not.toContain('not the right passphrase');
    expect(wrong.message).not.toContain(PASSPHRASE);
    expect(wrong.message).not.toMatch(/BEGIN|MII/);
    expect(wrong.cause).toBeUndefined();

    const missing = await rejection(new CertificateAuthority(options()).start());
    expect(missing.code).toBe('CA_KEY_PASSPHRASE_REQUIRED');
    expect(missing.message).toContain('root.key');
    expect(missing.message).toContain('PROVISIOND_CA__KEY_PASSPHRASE');

    // a service identity key that does not decrypt is an error too, never silently replaced
    const ca = new CertificateAuthority(options({ keyPassphrase: PASSPHRASE }));
    await ca.start();
    const signerKey = path.join(caDir(), 'config-signer.key');
    const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    await fs.writeFile(signerKey, other.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'another passphrase!' }), { mode: 0o600 });
    const before = await read('config-signer.key');
    const err = await rejection(ca.serviceIdentity('config-signer', { kind: 'signer', commonName: 'Keys Test Config Signer' }));
    expect(err.code).toBe('CA_KEY_PASSPHRASE_INVALID');
    expect(await read('config-signer.key')).toBe(before);
  });

  it('encrypts plaintext keys in place on the first start with a passphrase: same keys, same certificates, events reported', async () => {
    const plain = await startCa();
    for (const name of KEYS) expect(await read(name)).toContain(PRIVATE_KEY_PEM_HEADER);
    const keysBefore = await Promise.all(KEYS.map(async (n) => spki(await read(n))));
    const certsBefore = await Promise.all(['root.pem', 'issuing.pem', 'mqtt-server.pem', 'config-signer.pem'].map(read));

    const migrated = await startCa({ keyPassphrase: PASSPHRASE });
    expect(migrated.events.map((e) => [e.action, e.name])).toStrictEqual([
      ['key.encrypt', 'root'],
      ['key.encrypt', 'issuing'],
      ['key.encrypt', 'mqtt-server'],
      ['key.encrypt', 'config-signer'],
    ]);
    for (const [i, name] of KEYS.entries()) {
      const pem = await read(name);
      expect(pem).toContain(ENCRYPTED_PRIVATE_KEY_PEM_HEADER);
      expect(pem).not.toContain(PRIVATE_KEY_PEM_HEADER);
      expect(spki(pem, PASSPHRASE), name).toBe(keysBefore[i]);
      expect((await fs.stat(path.join(caDir(), name))).mode & 0o777).toBe(0o600);
    }
    expect(await Promise.all(['root.pem', 'issuing.pem', 'mqtt-server.pem', 'config-signer.pem'].map(read))).toStrictEqual(certsBefore);
    expect(migrated.ca.issuingPem).toBe(plain.ca.issuingPem);
    // no temporary file left behind
    expect((await fs.readdir(caDir())).filter((f) => f.endsWith('.tmp'))).toStrictEqual([]);
    // and from now on the passphrase is needed
    expect((await rejection(new CertificateAuthority(options()).start())).code).toBe('CA_KEY_PASSPHRASE_REQUIRED');
  });

  it('refuses a key readable by group or others, naming the file and the chmod to run (encrypted keys too)', async () => {
    await startCa({ keyPassphrase: PASSPHRASE });
    for (const [name, mode] of [
      ['root.key', 0o640],
      ['issuing.key', 0o604],
    ] as const) {
      const file = path.join(caDir(), name);
      await fs.chmod(file, mode);
      const err = await rejection(new CertificateAuthority(options({ keyPassphrase: PASSPHRASE })).start());
      expect(err.code).toBe('CA_KEY_PERMISSIONS');
      expect(err.message).toContain(`chmod 600 ${file}`);
      await fs.chmod(file, 0o600);
    }
    const ca = new CertificateAuthority(options({ keyPassphrase: PASSPHRASE }));
    await ca.start();
    const serverKey = path.join(caDir(), 'mqtt-server.key');
    await fs.chmod(serverKey, 0o644);
    const err = await rejection(ca.serviceIdentity('mqtt-server', { kind: 'server', hostnames: ['localhost'], ipAddresses: ['127.0.0.1'] }));
    expect(err.code).toBe('CA_KEY_PERMISSIONS');
    expect(err.message).toContain(`chmod 600 ${serverKey}`);
  });

  it('an operator-supplied issuing key may be encrypted with the passphrase; it is never rewritten', async () => {
    const { ca } = await startCa();
    const ext = path.join(tmp, 'ext');
    await fs.mkdir(ext);
    const key = crypto.createPrivateKey(await read('issuing.key'));
    const files = { issuingCertFile: path.join(ext, 'issuing.pem'), issuingKeyFile: path.join(ext, 'issuing.key'), rootCertFile: path.join(ext, 'root.pem') };
    await fs.writeFile(files.issuingCertFile, ca.issuingPem);
    await fs.writeFile(files.rootCertFile, ca.rootPem);
    await fs.writeFile(files.issuingKeyFile, key.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: PASSPHRASE }), { mode: 0o600 });
    const external = new CertificateAuthority(options({ dir: path.join(tmp, 'ca2'), external: files, keyPassphrase: PASSPHRASE }));
    await external.start();
    expect(external.issuingPem).toBe(ca.issuingPem);
    expect((await rejection(new CertificateAuthority(options({ dir: path.join(tmp, 'ca3'), external: files })).start())).code).toBe('CA_KEY_PASSPHRASE_REQUIRED');
    // a plaintext operator key stays plaintext (it is the operator's file)
    await fs.writeFile(files.issuingKeyFile, key.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    await new CertificateAuthority(options({ dir: path.join(tmp, 'ca4'), external: files, keyPassphrase: PASSPHRASE })).start();
    expect(await fs.readFile(files.issuingKeyFile, 'utf8')).toContain(PRIVATE_KEY_PEM_HEADER);
  });
});

describe('the passphrase in the configuration', () => {
  const configError = (fn: () => unknown): Error & { code?: string } => {
    try {
      fn();
    } catch (err) {
      return err as Error & { code?: string };
    }
    throw new Error('expected a configuration error');
  };

  it('comes from the environment or a file (first line); it is never echoed in a refusal', async () => {
    expect(loadConfig({ env: { PROVISIOND_CA__KEY_PASSPHRASE: PASSPHRASE } }).ca.keyPassphrase).toBe(PASSPHRASE);
    const file = path.join(tmp, 'passphrase');
    await fs.writeFile(file, `${PASSPHRASE}\nignored second line\n`);
    expect(loadConfig({ env: { PROVISIOND_CA__KEY_PASSPHRASE_FILE: file } }).ca.keyPassphrase).toBe(PASSPHRASE);

    const short = configError(() => loadConfig({ env: { PROVISIOND_CA__KEY_PASSPHRASE: 'tiny-secret' } }));
    expect(short.code).toBe('CONFIG_INVALID');
    expect(short.message).toContain('ca.keyPassphrase: must NOT have fewer than 12 characters (from env PROVISIOND_CA__KEY_PASSPHRASE)');
    expect(short.message).not.toContain('tiny-secret');

    await fs.writeFile(file, 'tiny-secret\n');
    const shortFile = configError(() => loadConfig({ env: { PROVISIOND_CA__KEY_PASSPHRASE_FILE: file } }));
    expect(shortFile.code).toBe('CONFIG_INVALID');
    expect(shortFile.message).toContain(`ca.keyPassphraseFile ${file}`);
    expect(shortFile.message).not.toContain('tiny-secret');
    const both = configError(() => loadConfig({ env: { PROVISIOND_CA__KEY_PASSPHRASE: PASSPHRASE, PROVISIOND_CA__KEY_PASSPHRASE_FILE: file } }));
    expect(both.message).toContain('ca.keyPassphrase and ca.keyPassphraseFile are both set');
    expect(both.message).not.toContain(PASSPHRASE);
    const missing = configError(() => loadConfig({ env: { PROVISIOND_CA__KEY_PASSPHRASE_FILE: path.join(tmp, 'nope') } }));
    expect(missing.code).toBe('CONFIG_FILE_UNREADABLE');
  });
});

describe('service secrets with the passphrase', () => {
  const dir = () => path.join(tmp, 'secrets');

  it('creates secrets encrypted (scrypt + AES-256-GCM), mode 0600, and reads them back', async () => {
    const events: string[] = [];
    const value = await loadOrCreateSecret(dir(), 'claim-code-pepper', { passphrase: PASSPHRASE, onKeyEvent: (e) => void events.push(e.action) });
    expect(events).toStrictEqual(['key.generate']);
    const text = await fs.readFile(path.join(dir(), 'claim-code-pepper'), 'utf8');
    expect(text).toMatch(/^provisiond-secret:v1:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+\n$/);
    expect(text).not.toContain(value.toString('base64url'));
    expect((await fs.stat(path.join(dir(), 'claim-code-pepper'))).mode & 0o777).toBe(0o600);
    expect((await loadOrCreateSecret(dir(), 'claim-code-pepper', { passphrase: PASSPHRASE })).equals(value)).toBe(true);
  });

  it('encrypts a plaintext secret in place; refuses a wrong or missing passphrase, and a file copied over another', async () => {
    const plain = await loadOrCreateSecret(dir(), 'bootstrap-token-key');
    expect(await fs.readFile(path.join(dir(), 'bootstrap-token-key'), 'utf8')).toBe(plain.toString('base64url') + '\n');
    const events: string[] = [];
    const migrated = await loadOrCreateSecret(dir(), 'bootstrap-token-key', { passphrase: PASSPHRASE, onKeyEvent: (e) => void events.push(e.action) });
    expect(migrated.equals(plain)).toBe(true);
    expect(events).toStrictEqual(['key.encrypt']);
    expect(await fs.readFile(path.join(dir(), 'bootstrap-token-key'), 'utf8')).toMatch(/^provisiond-secret:v1:/);
    expect(await fs.readdir(dir())).toStrictEqual(['bootstrap-token-key']);

    const wrong = await rejection(loadOrCreateSecret(dir(), 'bootstrap-token-key', { passphrase: 'a wrong passphrase' }));
    expect(wrong.code).toBe('SECRET_PASSPHRASE_INVALID');
    expect(wrong.message).not.toContain('a wrong passphrase');
    expect((await rejection(loadOrCreateSecret(dir(), 'bootstrap-token-key'))).code).toBe('SECRET_PASSPHRASE_REQUIRED');

    // the file name is bound to the value: one secret copied over another does not decrypt
    await fs.copyFile(path.join(dir(), 'bootstrap-token-key'), path.join(dir(), 'network-secret-key'));
    expect((await rejection(loadOrCreateSecret(dir(), 'network-secret-key', { passphrase: PASSPHRASE }))).code).toBe('SECRET_PASSPHRASE_INVALID');

    await fs.chmod(path.join(dir(), 'bootstrap-token-key'), 0o640);
    const perms = await rejection(loadOrCreateSecret(dir(), 'bootstrap-token-key', { passphrase: PASSPHRASE }));
    expect(perms.code).toBe('SECRET_PERMISSIONS');
    expect(perms.message).toContain(`chmod 600 ${path.join(dir(), 'bootstrap-token-key')}`);
  });
});
