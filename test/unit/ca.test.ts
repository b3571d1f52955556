import { execFileSync } from 'node:child_process';
import crypto, { X509Certificate } from 'node:crypto';
import { promises as fs, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Clock } from '../../src/clock.js';
import { systemClock } from '../../src/clock.js';
import { children, parseDer, value } from '../../src/ca/asn1.js';
import { CaError, CertificateAuthority, keyFingerprint, parseCsr, type CaOptions } from '../../src/ca/index.js';
import { PRIVATE_KEY_PEM_HEADER } from '../helpers/pem.js';

const OPENSSL = '/usr/bin/openssl';

function openssl(args: string[], cwd: string): string {
  return execFileSync(OPENSSL, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Fixtures shared by all tests: keys and CSRs made once with the openssl CLI. */
let fixtures: string;
const csr: Record<string, string> = {};
const key: Record<string, string> = {};

function makeCsr(name: string, newKeyArgs: string[] | null): void {
  const keyFile = path.join(fixtures, `${name}.key`);
  const csrFile = path.join(fixtures, `${name}.csr`);
  if (newKeyArgs === null) {
    openssl(['genpkey', '-algorithm', 'ed25519', '-out', keyFile], fixtures);
    openssl(['req', '-new', '-key', keyFile, '-subj', '/CN=evil', '-out', csrFile], fixtures);
  } else {
    openssl(['req', '-new', ...newKeyArgs, '-nodes', '-subj', '/CN=evil', '-keyout', keyFile, '-out', csrFile], fixtures);
  }
  csr[name] = readFileSync(csrFile, 'utf8');
  key[name] = readFileSync(keyFile, 'utf8');
}

beforeAll(async () => {
  fixtures = await fs.mkdtemp(path.join(os.tmpdir(), 'provisiond-ca-fixtures-'));
  makeCsr('p256', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);
  makeCsr('p384', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384']);
  makeCsr('rsa2048', ['-newkey', 'rsa:2048']);
  makeCsr('rsa1024', ['-newkey', 'rsa:1024']);
  makeCsr('p521', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-521']);
  makeCsr('ed25519', null);
});

afterAll(async () => {
  await fs.rm(fixtures, { recursive: true, force: true });
});

let tmp: string;
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'provisiond-ca-'));
});
afterEach(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

function options(overrides: Partial<CaOptions> = {}): CaOptions {
  return { dir: path.join(tmp, 'ca'), organization: 'Acme Devices', deviceValidityDays: 365, clock: systemClock, ...overrides };
}

async function startedCa(overrides: Partial<CaOptions> = {}): Promise<CertificateAuthority> {
  const ca = new CertificateAuthority(options(overrides));
  await ca.start();
  return ca;
}

function caErrorCode(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CaError);
    return (err as CaError).code;
  }
  throw new Error('expected a CaError');
}

async function rejectionCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CaError);
    return (err as CaError).code;
  }
  throw new Error('expected a rejection');
}

/** Writes root/issuing/leaf PEMs and runs `openssl verify`; returns its output. */
function opensslVerify(rootPem: string, chainPems: string[], leafPem: string, purpose?: string): string {
  writeFileSync(path.join(tmp, 'v-root.pem'), rootPem);
  writeFileSync(path.join(tmp, 'v-untrusted.pem'), chainPems.join(''));
  writeFileSync(path.join(tmp, 'v-leaf.pem'), leafPem);
  const args = ['verify', '-CAfile', 'v-root.pem', '-untrusted', 'v-untrusted.pem'];
  if (purpose) args.push('-purpose', purpose);
  return openssl([...args, 'v-leaf.pem'], tmp);
}

function derOf(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

function pemOf(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END ${label}-----\n`;
}

describe('CA material', () => {
  it('creates root and issuing CA on first start with private modes, and reloads them on the next start', async () => {
    const ca = await startedCa();
    const dir = path.join(tmp, 'ca');
    expect((await fs.stat(dir)).mode & 0o777).toBe(0o700);
    for (const f of ['root.key', 'issuing.key']) expect((await fs.stat(path.join(dir, f))).mode & 0o777).toBe(0o600);
    expect((await fs.readdir(dir)).sort()).toEqual(['issuing.key', 'issuing.pem', 'root.key', 'root.pem']);
    expect(readFileSync(path.join(dir, 'root.key'), 'utf8').split('\n')[0]).toBe(PRIVATE_KEY_PEM_HEADER); // PKCS#8 PEM

    const root = new X509Certificate(ca.rootPem);
    const issuing = new X509Certificate(ca.issuingPem);
    expect(root.subject).toBe('O=Acme Devices\nCN=Acme Devices Root CA');
    expect(issuing.subject).toBe('O=Acme Devices\nCN=Acme Devices Device Issuing CA');
    expect(root.ca && issuing.ca).toBe(true);
    expect(issuing.checkIssued(root) && issuing.verify(root.publicKey) && root.verify(root.publicKey)).toBe(true);
    expect(ca.chainPems).toEqual([ca.issuingPem, ca.rootPem]);

    const rootText = openssl(['x509', '-in', path.join(dir, 'root.pem'), '-noout', '-text'], tmp);
    expect(rootText).toMatch(/Basic Constraints: critical\s+CA:TRUE\n/);
    expect(rootText).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(rootText).toContain('Subject Key Identifier');
    const issText = openssl(['x509', '-in', path.join(dir, 'issuing.pem'), '-noout', '-text'], tmp);
    expect(issText).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(issText).toMatch(/Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
    expect(issText).toContain('Authority Key Identifier');
    expect(openssl(['verify', '-CAfile', 'ca/root.pem', 'ca/issuing.pem'], tmp)).toContain('OK');
    // Root valid 20 years, issuing 10 years.
    const years = (c: X509Certificate) => (Date.parse(c.validTo) - Date.parse(c.validFrom)) / (365.25 * 86_400_000);
    expect(Math.round(years(root))).toBe(20);
    expect(Math.round(years(issuing))).toBe(10);

    const again = await startedCa();
    expect(again.rootPem).toBe(ca.rootPem);
    expect(again.issuingPem).toBe(ca.issuingPem);
  });

  it('refuses to start when a CA key file is readable by others', async () => {
    await startedCa();
    await fs.chmod(path.join(tmp, 'ca', 'issuing.key'), 0o644);
    expect(await rejectionCode(new CertificateAuthority(options()).start())).toBe('CA_KEY_PERMISSIONS');
    await fs.chmod(path.join(tmp, 'ca', 'issuing.key'), 0o600);
    await fs.chmod(path.join(tmp, 'ca', 'root.key'), 0o640);
    expect(await rejectionCode(new CertificateAuthority(options()).start())).toBe('CA_KEY_PERMISSIONS');
  });

  it('refuses half-present or tampered CA material', async () => {
    const ca = await startedCa();
    await fs.rm(path.join(tmp, 'ca', 'issuing.pem'));
    expect(await rejectionCode(new CertificateAuthority(options()).start())).toBe('CA_MATERIAL_INVALID');
    // A foreign key in place of the issuing key.
    writeFileSync(path.join(tmp, 'ca', 'issuing.pem'), ca.issuingPem);
    const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    await fs.writeFile(path.join(tmp, 'ca', 'issuing.key'), other, { mode: 0o600 });
    expect(await rejectionCode(new CertificateAuthority(options()).start())).toBe('CA_MATERIAL_INVALID');
  });

  it('finishes a CA creation a crash interrupted: completes it once the certificate is written, sets the key aside before', async () => {
    const dir = path.join(tmp, 'ca');
    const ca = await startedCa();
    // crash after issuing.pem, before issuing.key.new was renamed: completed, same CA
    await fs.rename(path.join(dir, 'issuing.key'), path.join(dir, 'issuing.key.new'));
    expect((await startedCa()).issuingPem).toBe(ca.issuingPem);
    expect(await fs.readdir(dir)).not.toContain('issuing.key.new');
    // crash after root.key.new, before root.pem (first start): a fresh file may be another
    // process creating the CA, so it is refused; an older one is set aside and a new CA made
    for (const f of ['root.pem', 'issuing.pem', 'issuing.key']) await fs.rm(path.join(dir, f));
    await fs.rename(path.join(dir, 'root.key'), path.join(dir, 'root.key.new'));
    expect(await rejectionCode(new CertificateAuthority(options()).start())).toBe('CA_MATERIAL_INVALID');
    const old = new Date(Date.now() - 120_000);
    await fs.utimes(path.join(dir, 'root.key.new'), old, old);
    const events: string[] = [];
    const again = await startedCa({ onKeyEvent: (e) => void events.push(`${e.action} ${e.name}`) });
    expect(again.rootPem).not.toBe(ca.rootPem);
    expect(events).toEqual(['key.discard root', 'key.generate root', 'key.generate issuing']);
    const files = await fs.readdir(dir);
    expect(files.filter((f) => f.startsWith('root.key.new.interrupted-'))).toHaveLength(1);
    expect(files).not.toContain('root.key.new');
  });

  it('creates a missing issuing CA under an existing root', async () => {
    const ca = await startedCa();
    await fs.rm(path.join(tmp, 'ca', 'issuing.pem'));
    await fs.rm(path.join(tmp, 'ca', 'issuing.key'));
    const again = await startedCa();
    expect(again.rootPem).toBe(ca.rootPem);
    expect(again.issuingPem).not.toBe(ca.issuingPem);
    expect(new X509Certificate(again.issuingPem).verify(new X509Certificate(ca.rootPem).publicKey)).toBe(true);
  });

  it('is unusable before start()', () => {
    const ca = new CertificateAuthority(options());
    expect(() => ca.rootPem).toThrow(/start/);
  });
});

describe('device certificates', () => {
  it.each(['p256', 'p384', 'rsa2048'])('issues an RFC 5280 device certificate for a %s CSR that openssl verifies', async (kind) => {
    const ca = await startedCa();
    const parsed = ca.parseCsr(csr[kind]!);
    expect(parsed.requestedSubject).toBe('CN=evil');
    const cert = ca.issueDevice({ deviceId: 'thermostat-0042', spkiDer: parsed.spkiDer });

    expect(opensslVerify(ca.rootPem, [ca.issuingPem], cert.pem, 'sslclient')).toContain('v-leaf.pem: OK');

    writeFileSync(path.join(tmp, 'dev.pem'), cert.pem);
    const text = openssl(['x509', '-in', 'dev.pem', '-noout', '-text'], tmp);
    expect(text).toContain('URI:urn:provisiond:device:thermostat-0042');
    expect(text).toMatch(/Subject: O = Acme Devices, CN = thermostat-0042\n/);
    expect(text).not.toContain('evil');
    expect(text).toContain('TLS Web Client Authentication');
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature/);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toContain('X509v3 Subject Key Identifier');
    expect(text).toContain('X509v3 Authority Key Identifier');
    expect(text).toContain('Version: 3 (0x2)');
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    if (kind === 'rsa2048') expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment\n/);
    else expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Key Agreement\n/);

    const x = new X509Certificate(cert.pem);
    const issuing = new X509Certificate(ca.issuingPem);
    expect(x.checkIssued(issuing)).toBe(true);
    expect(x.verify(issuing.publicKey)).toBe(true);
    expect(x.serialNumber.toLowerCase()).toBe(cert.serial);
    expect(x.subject).toBe('O=Acme Devices\nCN=thermostat-0042');
    expect(x.subjectAltName).toBe('URI:urn:provisiond:device:thermostat-0042');
    expect(x.issuer).toBe(issuing.subject);
    expect(x.publicKey.export({ type: 'spki', format: 'der' })).toEqual(parsed.spkiDer);
    expect(x.raw).toEqual(cert.der);
    // The SPKI is copied verbatim from the CSR.
    expect(x.raw.includes(parsed.spkiDer)).toBe(true);
    // SKI is SHA-1 of the subjectPublicKey bits; AKI is the issuing CA's SKI.
    const keyBits = value(children(parseDer(parsed.spkiDer))[1]!).subarray(1);
    const colonHex = (b: Buffer) => b.toString('hex').toUpperCase().replace(/(..)(?!$)/g, '$1:');
    const skiText = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(text)![1]!;
    expect(skiText).toBe(colonHex(crypto.createHash('sha1').update(keyBits).digest()));
    const issText = openssl(['x509', '-in', path.join(tmp, 'ca', 'issuing.pem'), '-noout', '-text'], tmp);
    const issuingSki = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(issText)![1]!;
    expect(/Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(text)![1]).toBe(issuingSki);
    expect(skiText).not.toBe(issuingSki);
  });

  it('takes validity from the injected clock (notBefore 5 minutes back, notAfter + deviceValidityDays)', async () => {
    const now = new Date('2031-06-15T12:00:00.750Z');
    const clock: Clock = { now: () => now };
    const ca = await startedCa({ clock, deviceValidityDays: 30 });
    const cert = ca.issueDevice({ deviceId: 'd1', spkiDer: parseCsr(csr.p256!).spkiDer });
    expect(cert.notBefore.toISOString()).toBe('2031-06-15T11:55:00.000Z');
    expect(cert.notAfter.toISOString()).toBe('2031-07-15T12:00:00.000Z');
    const x = new X509Certificate(cert.pem);
    expect(Date.parse(x.validFrom)).toBe(cert.notBefore.getTime());
    expect(Date.parse(x.validTo)).toBe(cert.notAfter.getTime());
    expect(Date.parse(new X509Certificate(ca.rootPem).validTo)).toBe(Date.parse('2051-06-15T12:00:00Z'));
  });

  it('uses GeneralizedTime from 2050 and never outlives the issuing CA', async () => {
    const now = new Date('2049-11-01T00:00:00Z');
    const ca = await startedCa({ clock: { now: () => now }, deviceValidityDays: 3660 });
    const cert = ca.issueDevice({ deviceId: 'd2', spkiDer: parseCsr(csr.p256!).spkiDer });
    // Issuing CA: 10 years from the clock; the device cert is clamped to it.
    expect(cert.notAfter.toISOString()).toBe('2059-11-01T00:00:00.000Z');
    const x = new X509Certificate(cert.pem);
    expect(Date.parse(x.validTo)).toBe(cert.notAfter.getTime());
    const epoch = String(Math.floor(now.getTime() / 1000) + 86_400);
    writeFileSync(path.join(tmp, 'v-leaf.pem'), cert.pem);
    writeFileSync(path.join(tmp, 'v-root.pem'), ca.rootPem);
    writeFileSync(path.join(tmp, 'v-untrusted.pem'), ca.issuingPem);
    expect(openssl(['verify', '-attime', epoch, '-CAfile', 'v-root.pem', '-untrusted', 'v-untrusted.pem', 'v-leaf.pem'], tmp)).toContain('OK');
    expect(cert.der.includes(Buffer.from('20591101000000Z'))).toBe(true);
  });

  it('refuses to issue once the issuing CA has expired', async () => {
    let now = new Date('2030-01-01T00:00:00Z');
    const ca = await startedCa({ clock: { now: () => now } });
    const spkiDer = parseCsr(csr.p256!).spkiDer;
    expect(ca.issueDevice({ deviceId: 'a', spkiDer }).notAfter.toISOString()).toBe('2031-01-01T00:00:00.000Z');
    now = new Date('2040-01-01T00:00:01Z');
    expect(caErrorCode(() => ca.issueDevice({ deviceId: 'a', spkiDer }))).toBe('CA_MATERIAL_INVALID');
    expect(await rejectionCode(new CertificateAuthority(options({ clock: { now: () => now } })).start())).toBe('CA_MATERIAL_INVALID');
  });

  it('gives positive, distinct 16-octet serials', async () => {
    const ca = await startedCa();
    const spkiDer = parseCsr(csr.p256!).spkiDer;
    const serials = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const { serial } = ca.issueDevice({ deviceId: `dev-${i}`, spkiDer });
      expect(serial).toMatch(/^(?:0[1-9a-f]|[1-7][0-9a-f])[0-9a-f]{30}$/);
      serials.add(serial);
    }
    expect(serials.size).toBe(1000);
    const last = ca.issueDevice({ deviceId: 'x', spkiDer });
    expect(new X509Certificate(last.pem).serialNumber.toLowerCase()).toBe(last.serial);
  });

  it('rejects invalid device ids and public keys', async () => {
    const ca = await startedCa();
    const spkiDer = parseCsr(csr.p256!).spkiDer;
    for (const deviceId of ['', '-x', 'a b', 'a/b', 'é', 'x'.repeat(65)]) {
      expect(caErrorCode(() => ca.issueDevice({ deviceId, spkiDer }))).toBe('ISSUE_REQUEST_INVALID');
    }
    expect(caErrorCode(() => ca.issueDevice({ deviceId: 'ok', spkiDer: Buffer.from('3000', 'hex') }))).toBe('ISSUE_REQUEST_INVALID');
    expect(caErrorCode(() => ca.issueDevice({ deviceId: 'ok', spkiDer: spkiDer.subarray(0, 20) }))).toBe('ISSUE_REQUEST_INVALID');
  });

  it('works as a TLS client certificate against a server that requests one', async () => {
    const ca = await startedCa();
    const deviceId = 'sensor-7';
    const device = ca.issueDevice({ deviceId, spkiDer: ca.parseCsr(csr.p256!).spkiDer });
    const server = await ca.serviceIdentity('mqtt-server', { kind: 'server', hostnames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    const result = await handshake(
      { key: server.keyPem, cert: server.certPem + server.chainPems[0], ca: ca.rootPem, requestCert: true, rejectUnauthorized: true },
      { ca: ca.rootPem, servername: 'localhost', key: key.p256!, cert: device.pem + ca.issuingPem },
    );
    expect(result.clientAuthorized).toBe(true);
    expect(result.serverSawAuthorized).toBe(true);
    expect(result.peerCn).toBe(deviceId);
  });
});

describe('CSR parsing', () => {
  it('returns key facts and a fingerprint of the SPKI', () => {
    const p = parseCsr(csr.p256!);
    expect(p.keyType).toBe('ec');
    expect(p.curve).toBe('P-256');
    expect(p.keyFingerprint).toBe(crypto.createHash('sha256').update(p.spkiDer).digest('hex'));
    expect(keyFingerprint(p.spkiDer)).toBe(p.keyFingerprint);
    expect(p.spkiDer).toEqual(crypto.createPublicKey(key.p256!).export({ type: 'spki', format: 'der' }));
    expect(p.publicKey.asymmetricKeyType).toBe('ec');
    const r = parseCsr(csr.rsa2048!);
    expect(r.keyType).toBe('rsa');
    expect(r.rsaBits).toBe(2048);
    expect(r.curve).toBeUndefined();
    expect(parseCsr(csr.p384!).curve).toBe('P-384');
  });

  it('tolerates the NEW CERTIFICATE REQUEST label and surrounding text', () => {
    const pem = csr.p256!.replace(/CERTIFICATE REQUEST/g, 'NEW CERTIFICATE REQUEST');
    expect(parseCsr('Subject: blah\n' + pem).curve).toBe('P-256');
  });

  it('accepts CSRs signed with SHA-384/512 and attributes', () => {
    const cnf = path.join(tmp, 'req.cnf');
    writeFileSync(cnf, '[req]\ndistinguished_name=dn\nreq_extensions=ext\n[dn]\n[ext]\nsubjectAltName=DNS:evil.example\n');
    const out = path.join(tmp, 'sha512.csr');
    openssl(['req', '-new', '-key', path.join(fixtures, 'p256.key'), '-sha512', '-subj', '/O=Evil Corp/CN=x\\+y', '-config', cnf, '-out', out], tmp);
    const p = parseCsr(readFileSync(out, 'utf8'));
    expect(p.requestedSubject).toBe('CN=x\\+y,O=Evil Corp');
  });

  it('accepts a compressed EC point and normalises the SPKI to the uncompressed form', () => {
    openssl(['ec', '-in', path.join(fixtures, 'p256.key'), '-conv_form', 'compressed', '-out', 'compressed.key'], tmp);
    openssl(['req', '-new', '-key', 'compressed.key', '-subj', '/CN=c', '-out', 'compressed.csr'], tmp);
    const p = parseCsr(readFileSync(path.join(tmp, 'compressed.csr'), 'utf8'));
    const uncompressed = parseCsr(csr.p256!);
    expect(p.spkiDer).toEqual(uncompressed.spkiDer);
    expect(p.keyFingerprint).toBe(uncompressed.keyFingerprint);
  });

  it('refuses a CSR whose signature does not verify', () => {
    const der = derOf(csr.p256!);
    der.writeUInt8(der[der.length - 1]! ^ 0x01, der.length - 1);
    expect(caErrorCode(() => parseCsr(pemOf('CERTIFICATE REQUEST', der)))).toBe('CSR_SIGNATURE_INVALID');
    const rsa = derOf(csr.rsa2048!);
    rsa.writeUInt8(rsa[rsa.length - 10]! ^ 0x40, rsa.length - 10);
    expect(caErrorCode(() => parseCsr(pemOf('CERTIFICATE REQUEST', rsa)))).toBe('CSR_SIGNATURE_INVALID');
    // Subject changed after signing.
    const tampered = derOf(csr.p256!);
    const at = tampered.indexOf(Buffer.from('evil'));
    tampered[at] = 'g'.charCodeAt(0);
    expect(caErrorCode(() => parseCsr(pemOf('CERTIFICATE REQUEST', tampered)))).toBe('CSR_SIGNATURE_INVALID');
  });

  it('refuses garbage, truncated DER and wrong PEM labels as CSR_MALFORMED', () => {
    const der = derOf(csr.p256!);
    const cases = [
      '',
      'hello',
      pemOf('CERTIFICATE REQUEST', crypto.randomBytes(200)),
      pemOf('CERTIFICATE REQUEST', der.subarray(0, der.length - 5)),
      pemOf('CERTIFICATE REQUEST', Buffer.concat([der, Buffer.from([0])])),
      pemOf('CERTIFICATE', der),
      pemOf('CERTIFICATE REQUEST', der) + pemOf('CERTIFICATE REQUEST', der),
      csr.p256!.replace(/\n[A-Za-z0-9+/]/, '\n*'),
      'x'.repeat(70_000),
      42 as unknown as string,
    ];
    for (const input of cases) expect(caErrorCode(() => parseCsr(input))).toBe('CSR_MALFORMED');
    // A long-form length where the short form fits (non-minimal).
    const nonMinimal = Buffer.concat([Buffer.from([0x30, 0x82, 0x00, 0x7f]), Buffer.alloc(0x7f)]);
    expect(caErrorCode(() => parseCsr(pemOf('CERTIFICATE REQUEST', nonMinimal)))).toBe('CSR_MALFORMED');
  });

  it('never throws anything but CaError on mutated input', () => {
    const der = derOf(csr.p256!);
    for (let i = 0; i < 300; i++) {
      const m = Buffer.from(der);
      m[i % m.length] = (m[i % m.length]! + 1 + (i >> 3)) & 0xff;
      try {
        parseCsr(pemOf('CERTIFICATE REQUEST', m));
      } catch (err) {
        expect(err).toBeInstanceOf(CaError);
      }
    }
  });

  it.each(['rsa1024', 'p521', 'ed25519'])('refuses %s keys as CSR_KEY_UNSUPPORTED', (kind) => {
    expect(caErrorCode(() => parseCsr(csr[kind]!))).toBe('CSR_KEY_UNSUPPORTED');
  });

  it('refuses RSA-PSS signed CSRs as CSR_KEY_UNSUPPORTED', () => {
    const out = path.join(tmp, 'pss.csr');
    openssl(['req', '-new', '-key', path.join(fixtures, 'rsa2048.key'), '-sigopt', 'rsa_padding_mode:pss', '-subj', '/CN=p', '-out', out], tmp);
    expect(caErrorCode(() => parseCsr(readFileSync(out, 'utf8')))).toBe('CSR_KEY_UNSUPPORTED');
  });
});

describe('external CA', () => {
  function makeExternalCa(dir: string): { root: string; issuing: string; issuingKey: string } {
    const ext = path.join(dir, 'ext.cnf');
    writeFileSync(
      ext,
      [
        '[v3_int]',
        'basicConstraints=critical,CA:TRUE,pathlen:0',
        'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
        'subjectKeyIdentifier=hash',
        'authorityKeyIdentifier=keyid',
        '[v3_leaf]',
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        '',
      ].join('\n'),
    );
    openssl(
      [
        'req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ext-root.key', '-out', 'ext-root.pem',
        '-days', '3650', '-subj', '/O=Operator/CN=Operator Root', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      ],
      dir,
    );
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ext-int.key', '-out', 'ext-int.csr', '-subj', '/O=Operator/CN=Operator Issuing'], dir);
    openssl(
      ['x509', '-req', '-in', 'ext-int.csr', '-CA', 'ext-root.pem', '-CAkey', 'ext-root.key', '-set_serial', '0x1001', '-days', '1000', '-extfile', ext, '-extensions', 'v3_int', '-out', 'ext-int.pem'],
      dir,
    );
    execFileSync('chmod', ['600', path.join(dir, 'ext-int.key')]);
    return { root: path.join(dir, 'ext-root.pem'), issuing: path.join(dir, 'ext-int.pem'), issuingKey: path.join(dir, 'ext-int.key') };
  }

  it('loads an operator CA made with openssl and issues certificates openssl verifies', async () => {
    const ext = makeExternalCa(tmp);
    const ca = await startedCa({ external: { issuingCertFile: ext.issuing, issuingKeyFile: ext.issuingKey, rootCertFile: ext.root } });
    expect(new X509Certificate(ca.rootPem).fingerprint256).toBe(new X509Certificate(readFileSync(ext.root)).fingerprint256);
    expect(ca.chainPems).toHaveLength(2);
    const cert = ca.issueDevice({ deviceId: 'ext-device', spkiDer: ca.parseCsr(csr.p384!).spkiDer });
    expect(opensslVerify(readFileSync(ext.root, 'utf8'), [readFileSync(ext.issuing, 'utf8')], cert.pem)).toContain('OK');
    const x = new X509Certificate(cert.pem);
    expect(x.issuer).toBe('O=Operator\nCN=Operator Issuing');
    // Nothing was generated in dir.
    expect(await fs.readdir(path.join(tmp, 'ca'))).toEqual([]);
  });

  it('follows intermediates given after the root in the root certificate file', async () => {
    const ext = makeExternalCa(tmp);
    // Re-issue the "issuing" CA under a new intermediate: root -> mid -> issuing2.
    writeFileSync(
      path.join(tmp, 'mid.cnf'),
      '[v3_mid]\nbasicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n',
    );
    openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'mid.key', '-out', 'mid.csr', '-subj', '/CN=Operator Mid'], tmp);
    openssl(['x509', '-req', '-in', 'mid.csr', '-CA', ext.root, '-CAkey', 'ext-root.key', '-set_serial', '9', '-days', '900', '-extfile', 'mid.cnf', '-extensions', 'v3_mid', '-out', 'mid.pem'], tmp);
    openssl(['x509', '-req', '-in', 'ext-int.csr', '-CA', 'mid.pem', '-CAkey', 'mid.key', '-set_serial', '10', '-days', '800', '-extfile', 'ext.cnf', '-extensions', 'v3_int', '-out', 'int2.pem'], tmp);
    const bundle = path.join(tmp, 'bundle.pem');
    writeFileSync(bundle, readFileSync(ext.root, 'utf8') + readFileSync(path.join(tmp, 'mid.pem'), 'utf8'));
    const ca = await startedCa({ external: { issuingCertFile: path.join(tmp, 'int2.pem'), issuingKeyFile: ext.issuingKey, rootCertFile: bundle } });
    expect(ca.chainPems).toHaveLength(3);
    expect(new X509Certificate(ca.chainPems[1]!).subject).toBe('CN=Operator Mid');
    expect(ca.chainPems[2]).toBe(ca.rootPem);
    const cert = ca.issueDevice({ deviceId: 'deep', spkiDer: parseCsr(csr.rsa2048!).spkiDer });
    expect(opensslVerify(ca.rootPem, ca.chainPems.slice(0, 2), cert.pem)).toContain('OK');
  });

  it('signs with an RSA issuing key (sha256WithRSAEncryption)', async () => {
    const ext = makeExternalCa(tmp);
    openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'rsa-int.key', '-out', 'rsa-int.csr', '-subj', '/CN=Operator RSA Issuing'], tmp);
    openssl(['x509', '-req', '-in', 'rsa-int.csr', '-CA', ext.root, '-CAkey', 'ext-root.key', '-set_serial', '11', '-days', '800', '-extfile', 'ext.cnf', '-extensions', 'v3_int', '-out', 'rsa-int.pem'], tmp);
    await fs.chmod(path.join(tmp, 'rsa-int.key'), 0o600);
    const ca = await startedCa({ external: { issuingCertFile: path.join(tmp, 'rsa-int.pem'), issuingKeyFile: path.join(tmp, 'rsa-int.key'), rootCertFile: ext.root } });
    const cert = ca.issueDevice({ deviceId: 'rsa-signed', spkiDer: parseCsr(csr.p256!).spkiDer });
    writeFileSync(path.join(tmp, 'r.pem'), cert.pem);
    expect(openssl(['x509', '-in', 'r.pem', '-noout', '-text'], tmp)).toContain('Signature Algorithm: sha256WithRSAEncryption');
    expect(opensslVerify(ca.rootPem, [ca.issuingPem], cert.pem)).toContain('OK');
  });

  it('refuses a key that does not match, a non-CA issuing cert, a wrong root, and a world-readable key', async () => {
    const ext = makeExternalCa(tmp);
    const external = { issuingCertFile: ext.issuing, issuingKeyFile: ext.issuingKey, rootCertFile: ext.root };
    const start = (e: typeof external) => new CertificateAuthority(options({ external: e })).start();

    const wrongKey = path.join(tmp, 'wrong.key');
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', wrongKey], tmp);
    await fs.chmod(wrongKey, 0o600);
    expect(await rejectionCode(start({ ...external, issuingKeyFile: wrongKey }))).toBe('CA_MATERIAL_INVALID');

    // A leaf (CA:FALSE) signed by the root, used as the "issuing CA".
    openssl(['req', '-new', '-key', wrongKey, '-out', 'leaf.csr', '-subj', '/CN=leaf'], tmp);
    openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', ext.root, '-CAkey', path.join(tmp, 'ext-root.key'), '-set_serial', '7', '-days', '30', '-extfile', path.join(tmp, 'ext.cnf'), '-extensions', 'v3_leaf', '-out', 'leaf.pem'], tmp);
    expect(await rejectionCode(start({ ...external, issuingCertFile: path.join(tmp, 'leaf.pem'), issuingKeyFile: wrongKey }))).toBe('CA_MATERIAL_INVALID');

    // A root the issuing CA does not chain to.
    const own = await startedCa();
    const otherRoot = path.join(tmp, 'other-root.pem');
    writeFileSync(otherRoot, own.rootPem);
    expect(await rejectionCode(start({ ...external, rootCertFile: otherRoot }))).toBe('CA_MATERIAL_INVALID');

    expect(await rejectionCode(start({ ...external, rootCertFile: path.join(tmp, 'missing.pem') }))).toBe('CA_MATERIAL_INVALID');

    await fs.chmod(ext.issuingKey, 0o644);
    expect(await rejectionCode(start(external))).toBe('CA_KEY_PERMISSIONS');
  });
});

describe('server and signer certificates', () => {
  it('issues a server certificate that completes a real TLS handshake', async () => {
    const ca = await startedCa();
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const cert = ca.issueServer({
      hostnames: ['localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
      spkiDer: publicKey.export({ type: 'spki', format: 'der' }),
      validityDays: 30,
    });
    const x = new X509Certificate(cert.pem);
    expect(x.subject).toBe('CN=localhost');
    expect(x.subjectAltName).toContain('DNS:localhost');
    expect(x.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(x.checkHost('localhost')).toBe('localhost');
    expect(x.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(x.checkIP('::1')).toBe('::1');
    expect(opensslVerify(ca.rootPem, [ca.issuingPem], cert.pem, 'sslserver')).toContain('OK');

    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const result = await handshake({ key: keyPem, cert: cert.pem + ca.issuingPem }, { ca: ca.rootPem, servername: 'localhost' });
    expect(result.clientAuthorized).toBe(true);
  });

  it('issues a signer certificate with digitalSignature and only the config-signing EKU', async () => {
    const ca = await startedCa();
    const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const cert = ca.issueSigner({ commonName: 'provisiond config signer', spkiDer: publicKey.export({ type: 'spki', format: 'der' }), validityDays: 90 });
    writeFileSync(path.join(tmp, 's.pem'), cert.pem);
    const text = openssl(['x509', '-in', 's.pem', '-noout', '-text'], tmp);
    expect(text).toContain('CN = provisiond config signer');
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(/X509v3 Extended Key Usage: \n\s+2\.25\.255650878675251502668112521049223055722\n/);
    expect(new crypto.X509Certificate(cert.pem).keyUsage).toEqual(['2.25.255650878675251502668112521049223055722']);
    expect(opensslVerify(ca.rootPem, [ca.issuingPem], cert.pem)).toContain('OK');
  });

  it('rejects invalid names', async () => {
    const ca = await startedCa();
    const spkiDer = parseCsr(csr.p256!).spkiDer;
    const server = (hostnames: string[], ipAddresses: string[]) => () => ca.issueServer({ hostnames, ipAddresses, spkiDer, validityDays: 1 });
    expect(caErrorCode(server([], []))).toBe('ISSUE_REQUEST_INVALID');
    expect(caErrorCode(server(['bad host'], []))).toBe('ISSUE_REQUEST_INVALID');
    expect(caErrorCode(server(['ok'], ['300.1.1.1']))).toBe('ISSUE_REQUEST_INVALID');
    expect(caErrorCode(() => ca.issueSigner({ commonName: '', spkiDer, validityDays: 1 }))).toBe('ISSUE_REQUEST_INVALID');
    expect(caErrorCode(() => ca.issueSigner({ commonName: 'x', spkiDer, validityDays: 0 }))).toBe('ISSUE_REQUEST_INVALID');
  });
});

describe('serviceIdentity', () => {
  it('reuses the stored identity and renews it when the names change', async () => {
    const ca = await startedCa();
    const spec = { kind: 'server' as const, hostnames: ['localhost', 'provisiond.local'], ipAddresses: ['127.0.0.1'] };
    const first = await ca.serviceIdentity('api', spec);
    expect((await fs.stat(path.join(tmp, 'ca', 'api.key'))).mode & 0o777).toBe(0o600);
    expect(first.chainPems).toEqual([ca.issuingPem, ca.rootPem]);
    expect(new X509Certificate(first.certPem).checkPrivateKey(crypto.createPrivateKey(first.keyPem))).toBe(true);

    // A fresh instance (as after a restart) finds the same identity; name order and case do not matter.
    const restarted = await startedCa();
    const second = await restarted.serviceIdentity('api', { ...spec, hostnames: ['provisiond.local', 'LOCALHOST'] });
    expect(second.certPem).toBe(first.certPem);
    expect(second.keyPem).toBe(first.keyPem);

    const third = await ca.serviceIdentity('api', { ...spec, hostnames: ['localhost', 'other.local'] });
    expect(third.certPem).not.toBe(first.certPem);
    expect(third.keyPem).not.toBe(first.keyPem);
    expect(new X509Certificate(third.certPem).subjectAltName).toContain('DNS:other.local');
    expect(readFileSync(path.join(tmp, 'ca', 'api.pem'), 'utf8')).toBe(third.certPem);

    const signer = await ca.serviceIdentity('config-signer', { kind: 'signer', commonName: 'provisiond config signer' });
    expect((await ca.serviceIdentity('config-signer', { kind: 'signer', commonName: 'provisiond config signer' })).certPem).toBe(signer.certPem);
    expect((await ca.serviceIdentity('config-signer', { kind: 'signer', commonName: 'renamed' })).certPem).not.toBe(signer.certPem);
  });

  it('renews a certificate with 30 days or less left', async () => {
    let now = new Date('2030-01-01T00:00:00Z');
    const ca = await startedCa({ clock: { now: () => now } });
    const first = await ca.serviceIdentity('api', { kind: 'signer', commonName: 'x' });
    now = new Date('2030-11-15T00:00:00Z');
    expect((await ca.serviceIdentity('api', { kind: 'signer', commonName: 'x' })).certPem).toBe(first.certPem);
    now = new Date('2030-12-05T00:00:00Z');
    const renewed = await ca.serviceIdentity('api', { kind: 'signer', commonName: 'x' });
    expect(renewed.certPem).not.toBe(first.certPem);
  });

  it('shares concurrent calls and refuses bad names', async () => {
    const ca = await startedCa();
    const spec = { kind: 'signer' as const, commonName: 'c' };
    const [a, b] = await Promise.all([ca.serviceIdentity('svc', spec), ca.serviceIdentity('svc', spec)]);
    expect(a.certPem).toBe(b.certPem);
    expect(await rejectionCode(ca.serviceIdentity('../root', spec))).toBe('ISSUE_REQUEST_INVALID');
    expect(await rejectionCode(ca.serviceIdentity('issuing', spec))).toBe('ISSUE_REQUEST_INVALID');
  });
});

// ---------------------------------------------------------------------------------------------

interface HandshakeResult {
  clientAuthorized: boolean;
  serverSawAuthorized: boolean;
  peerCn: string | undefined;
}

/** One TLS connection from a client to a fresh local server; resolves when both sides agree. */
async function handshake(serverOpts: tls.TlsOptions, clientOpts: tls.ConnectionOptions): Promise<HandshakeResult> {
  let serverSide: Promise<{ authorized: boolean; cn: string | undefined }>;
  const server = tls.createServer(serverOpts);
  serverSide = new Promise((resolve, reject) => {
    server.on('secureConnection', (socket) => {
      const peer = socket.getPeerCertificate();
      const cn = peer.subject?.CN;
      resolve({ authorized: socket.authorized, cn: Array.isArray(cn) ? cn[0] : cn });
      socket.end('hi');
    });
    server.on('tlsClientError', reject);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const clientAuthorized = await new Promise<boolean>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ...clientOpts }, () => {
        resolve(socket.authorized);
      });
      socket.on('error', reject);
      socket.on('data', () => socket.end());
    });
    const s = await serverSide;
    return { clientAuthorized, serverSawAuthorized: s.authorized, peerCn: s.cn };
  } finally {
    server.close();
  }
}
