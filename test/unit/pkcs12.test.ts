import { spawnSync } from 'node:child_process';
import { X509Certificate, createHash, createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertificateAuthority } from '../../src/ca/index.js';
import { systemClock } from '../../src/clock.js';
import { PRIVATE_KEY_PEM_HEADER } from '../helpers/pem.js';
import {
  BUNDLE_PASSWORD_BITS,
  PKCS12_ITERATIONS,
  Pkcs12Error,
  buildPkcs12,
  generateBundlePassword,
  readPkcs12,
  type Pkcs12Input,
} from '../../src/factory/pkcs12.js';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

let dir: string;
let ca: CertificateAuthority;
interface Device {
  kind: string;
  key: KeyObject;
  keyPem: string;
  certPem: string;
}
const devices: Device[] = [];

/** Runs the openssl CLI in the temp dir; never throws (callers look at status/stdout/stderr). */
function openssl(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok(args: string[], input?: string): string {
  const r = openssl(args, input);
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

function pemCerts(text: string): string[] {
  return [...text.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)].map((m) => m[0]);
}

const fingerprint = (pem: string): string => new X509Certificate(pem).fingerprint256;
const pkcs8Der = (pem: string): string => createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' }).toString('hex');

function errorCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(Pkcs12Error);
    return (err as InstanceType<typeof Pkcs12Error>).code;
  }
  return undefined;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'provisiond-pkcs12-'));
  ca = new CertificateAuthority({ dir: join(dir, 'ca'), organization: 'Acme Devices', deviceValidityDays: 30, clock: systemClock });
  await ca.start();
  const pairs = [
    { kind: 'EC P-256', pair: generateKeyPairSync('ec', { namedCurve: 'P-256' }) },
    { kind: 'RSA-2048', pair: generateKeyPairSync('rsa', { modulusLength: 2048 }) },
  ];
  for (const [i, { kind, pair }] of pairs.entries()) {
    const issued = ca.issueDevice({ deviceId: `dev-${i}`, spkiDer: pair.publicKey.export({ type: 'spki', format: 'der' }) });
    devices.push({ kind, key: pair.privateKey, keyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, certPem: issued.pem });
  }
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe('generateBundlePassword', () => {
  const FORMAT = /^[0-7][0-9A-HJKMNP-TV-Z]{3}(-[0-9A-HJKMNP-TV-Z]{4}){5}-[0-9A-HJKMNP-TV-Z]{2}$/;

  it('encodes exactly the 128 random bits it asked for, in grouped Crockford base32', () => {
    const requested: number[] = [];
    const bytes = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const password = generateBundlePassword((n) => {
      requested.push(n);
      return Buffer.from(bytes);
    });
    expect(requested).toEqual([BUNDLE_PASSWORD_BITS / 8]);
    expect(password).toMatch(FORMAT);
    let value = 0n;
    for (const ch of password.replace(/-/g, '')) value = value * 32n + BigInt(CROCKFORD.indexOf(ch));
    expect(value.toString(16).padStart(32, '0')).toBe(bytes.toString('hex'));

    expect(generateBundlePassword((n) => Buffer.alloc(n, 0xff))).toBe('7ZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZ');
    expect(generateBundlePassword((n) => Buffer.alloc(n, 0))).toBe('0000-0000-0000-0000-0000-0000-00');
    expect(() => generateBundlePassword(() => Buffer.alloc(15))).toThrow(RangeError);
  });

  it('gives distinct values from the system random source', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const p = generateBundlePassword();
      expect(p).toMatch(FORMAT);
      seen.add(p);
    }
    expect(seen.size).toBe(2000);
  });
});

describe.each([
  { index: 0, kind: 'EC P-256' },
  { index: 1, kind: 'RSA-2048' },
])('buildPkcs12 with an $kind key', ({ index, kind }) => {
  let device: Device;
  let input: Pkcs12Input;
  let file: string;

  beforeAll(() => {
    device = devices[index]!;
    expect(device.kind).toBe(kind);
    input = { keyPem: device.keyPem, certPem: device.certPem, chainPems: ca.chainPems, password: generateBundlePassword(), friendlyName: `dev-${index}` };
    file = `bundle-${index}.p12`;
    writeFileSync(join(dir, file), buildPkcs12(input));
  });

  it('opens with openssl 3 without -legacy, with AES-256-CBC/PBKDF2-SHA-256 and a SHA-256 MAC', () => {
    const r = openssl(['pkcs12', '-in', file, '-passin', `pass:${input.password}`, '-nodes', '-info']);
    expect(r.stderr).not.toMatch(/error|unsupported/i);
    expect(r.status, `${device.kind}: ${r.stderr}`).toBe(0);
    expect(r.stderr).toContain(`MAC: sha256, Iteration ${PKCS12_ITERATIONS}`);
    expect(r.stderr).toContain(`PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration ${PKCS12_ITERATIONS}, PRF hmacWithSHA256`);
    expect(r.stderr).toContain(`Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration ${PKCS12_ITERATIONS}, PRF hmacWithSHA256`);
    expect(r.stdout).toContain(`friendlyName: dev-${index}`);
    expect(r.stdout).toContain(PRIVATE_KEY_PEM_HEADER);
    expect(pemCerts(r.stdout)).toHaveLength(1 + ca.chainPems.length);
  });

  it('holds the key that matches the certificate, and the chain', () => {
    const pass = ['-passin', `pass:${input.password}`];
    const keyOut = ok(['pkcs12', '-in', file, ...pass, '-nocerts', '-nodes']);
    const leafOut = ok(['pkcs12', '-in', file, ...pass, '-clcerts', '-nokeys']);
    const chainOut = ok(['pkcs12', '-in', file, ...pass, '-cacerts', '-nokeys']);

    const keyPub = ok(['pkey', '-pubout'], keyOut);
    const certPub = ok(['x509', '-noout', '-pubkey'], leafOut);
    expect(keyPub).toContain('-----BEGIN PUBLIC KEY-----');
    expect(keyPub).toBe(certPub);
    expect(pkcs8Der(keyOut)).toBe(pkcs8Der(device.keyPem));

    expect(pemCerts(leafOut).map(fingerprint)).toEqual([fingerprint(device.certPem)]);
    expect(pemCerts(chainOut).map(fingerprint).sort()).toEqual(ca.chainPems.map(fingerprint).sort());

    // the bundle's certificates form a chain openssl accepts
    writeFileSync(join(dir, `root-${index}.pem`), ca.chainPems.at(-1)!);
    writeFileSync(join(dir, `chain-${index}.pem`), chainOut);
    writeFileSync(join(dir, `leaf-${index}.pem`), leafOut);
    expect(ok(['verify', '-CAfile', `root-${index}.pem`, '-untrusted', `chain-${index}.pem`, `leaf-${index}.pem`])).toContain('OK');
  });

  it('refuses a wrong password, in openssl and in readPkcs12', () => {
    const r = openssl(['pkcs12', '-in', file, '-passin', `pass:${generateBundlePassword()}`, '-nodes', '-info']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/mac verify error/i);
    expect(r.stdout).not.toContain('PRIVATE KEY');

    const der = readFileSync(join(dir, file));
    expect(errorCode(() => readPkcs12(der, input.password.toLowerCase()))).toBe('PKCS12_BAD_PASSWORD');
    expect(() => readPkcs12(der, 'wrong')).toThrow(/wrong password/);
  });

  it('round-trips through readPkcs12', () => {
    const read = readPkcs12(readFileSync(join(dir, file)), input.password);
    expect(pkcs8Der(read.keyPem)).toBe(pkcs8Der(device.keyPem));
    expect(read.keyPem).toContain(PRIVATE_KEY_PEM_HEADER);
    expect(read.certPem).toBe(device.certPem);
    expect(read.chainPems).toEqual(ca.chainPems);
    expect(read.friendlyName).toBe(`dev-${index}`);
  });
});

describe('buildPkcs12 inputs', () => {
  const base = (): Pkcs12Input => ({ keyPem: devices[0]!.keyPem, certPem: devices[0]!.certPem, chainPems: ca.chainPems, password: 'P4SS-W0RD', friendlyName: '' });

  it('accepts an empty chain and no friendlyName', () => {
    const read = readPkcs12(buildPkcs12({ ...base(), chainPems: [] }), 'P4SS-W0RD');
    expect(read.certPem).toBe(devices[0]!.certPem);
    expect(read.chainPems).toEqual([]);
    expect(read.friendlyName).toBeUndefined();
  });

  it('uses fresh salts and IVs for every bundle', () => {
    const a = buildPkcs12(base());
    const b = buildPkcs12(base());
    expect(createHash('sha256').update(a).digest('hex')).not.toBe(createHash('sha256').update(b).digest('hex'));
  });

  it('refuses a key that does not match the certificate, a misordered chain, bad PEM and non-ASCII passwords', () => {
    expect(errorCode(() => buildPkcs12({ ...base(), keyPem: devices[1]!.keyPem }))).toBe('PKCS12_INPUT_INVALID');
    expect(errorCode(() => buildPkcs12({ ...base(), chainPems: [...ca.chainPems].reverse() }))).toBe('PKCS12_INPUT_INVALID');
    expect(errorCode(() => buildPkcs12({ ...base(), certPem: 'not a pem' }))).toBe('PKCS12_INPUT_INVALID');
    expect(errorCode(() => buildPkcs12({ ...base(), certPem: devices[0]!.certPem + devices[1]!.certPem }))).toBe('PKCS12_INPUT_INVALID');
    expect(errorCode(() => buildPkcs12({ ...base(), keyPem: 'garbage' }))).toBe('PKCS12_INPUT_INVALID');
    expect(errorCode(() => buildPkcs12({ ...base(), password: '' }))).toBe('PKCS12_INPUT_INVALID');
    expect(errorCode(() => buildPkcs12({ ...base(), password: 'pässword' }))).toBe('PKCS12_INPUT_INVALID');
  });
});

describe('readPkcs12 on bundles made elsewhere', () => {
  it('reads an OpenSSL 3 default bundle', () => {
    const d = devices[1]!;
    writeFileSync(join(dir, 'os.key'), d.keyPem);
    writeFileSync(join(dir, 'os.crt'), d.certPem);
    writeFileSync(join(dir, 'os-chain.pem'), ca.chainPems.join(''));
    ok(['pkcs12', '-export', '-inkey', 'os.key', '-in', 'os.crt', '-certfile', 'os-chain.pem', '-name', 'from-openssl', '-passout', 'pass:secret', '-out', 'os.p12']);
    const read = readPkcs12(readFileSync(join(dir, 'os.p12')), 'secret');
    expect(pkcs8Der(read.keyPem)).toBe(pkcs8Der(d.keyPem));
    expect(read.certPem).toBe(d.certPem);
    expect(read.chainPems.map(fingerprint).sort()).toEqual(ca.chainPems.map(fingerprint).sort());
    expect(read.friendlyName).toBe('from-openssl');
    expect(errorCode(() => readPkcs12(readFileSync(join(dir, 'os.p12')), 'Secret'))).toBe('PKCS12_BAD_PASSWORD');
  });

  it('refuses a bundle without MAC and data that is not PKCS#12', () => {
    const d = devices[0]!;
    writeFileSync(join(dir, 'nomac.key'), d.keyPem);
    writeFileSync(join(dir, 'nomac.crt'), d.certPem);
    ok(['pkcs12', '-export', '-inkey', 'nomac.key', '-in', 'nomac.crt', '-nomac', '-passout', 'pass:secret', '-out', 'nomac.p12']);
    expect(errorCode(() => readPkcs12(readFileSync(join(dir, 'nomac.p12')), 'secret'))).toBe('PKCS12_MALFORMED');
    expect(errorCode(() => readPkcs12(Buffer.from('not a bundle'), 'secret'))).toBe('PKCS12_MALFORMED');
    expect(errorCode(() => readPkcs12(new X509Certificate(d.certPem).raw, 'secret'))).toBe('PKCS12_MALFORMED');
  });
});
