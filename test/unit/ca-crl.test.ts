/**
 * Certificate revocation lists. node:crypto cannot parse CRLs, so the openssl CLI is the judge:
 * `openssl crl -verify` checks the signature against the chain, `openssl crl -text` shows the
 * fields, and `openssl verify -crl_check` decides whether a device certificate is revoked.
 */
import { spawnSync } from 'node:child_process';
import crypto, { X509Certificate } from 'node:crypto';
import { promises as fs, chmodSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { readCertificate } from '../../src/ca/certificate.js';
import { CaError, CertificateAuthority, crlToDer, crlToPem, readCrl, type CrlInput, type CrlReason, type RevokedCertificate } from '../../src/ca/index.js';

const OPENSSL = '/usr/bin/openssl';
const DAY = 86_400_000;

let tmp: string;
let ca: CertificateAuthority;
/** Issuing CA SKI as openssl prints it (colon hex). */
let issuingSki: string;

/** Runs openssl in tmp; returns exit status and stdout + stderr together. */
function openssl(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(OPENSSL, args, { cwd: tmp, encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

function opensslOk(args: string[]): string {
  const r = openssl(args);
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.status}):\n${r.out}`);
  return r.out;
}

/** openssl's date format: "Jan  7 12:00:00 2050 GMT". */
function opensslDate(d: Date): string {
  const month = d.toLocaleString('en-US', { month: 'short', timeZone: 'UTC' });
  const p2 = (n: number) => String(n).padStart(2, '0');
  return `${month} ${String(d.getUTCDate()).padStart(2, ' ')} ${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} ${d.getUTCFullYear()} GMT`;
}

/** A hex serial as openssl prints it: value octets (no sign octet), upper case. */
function opensslSerial(hex: string): string {
  const even = hex.length % 2 ? '0' + hex : hex;
  return even.replace(/^(00)+(?=..)/, '').toUpperCase();
}

const colonHex = (b: Buffer) => b.toString('hex').toUpperCase().replace(/(..)(?!$)/g, '$1:');

const REASON_TEXT: Record<CrlReason, string | undefined> = {
  unspecified: undefined,
  keyCompromise: 'Key Compromise',
  affiliationChanged: 'Affiliation Changed',
  superseded: 'Superseded',
  cessationOfOperation: 'Cessation Of Operation',
};

interface TextEntry {
  date: string;
  reason: string | undefined;
}

/** `openssl crl -text` of a DER CRL after checking that `-verify` against chain.pem prints "verify OK". */
function verifiedText(der: Buffer, file = 'crl.der'): string {
  writeFileSync(path.join(tmp, file), der);
  const out = opensslOk(['crl', '-inform', 'DER', '-in', file, '-CAfile', 'chain.pem', '-noout', '-verify', '-text']);
  expect(out).toContain('verify OK');
  return out;
}

function header(text: string): { lastUpdate: string; nextUpdate: string; crlNumber: string; aki: string } {
  const m = (re: RegExp) => re.exec(text)?.[1] ?? '(missing)';
  return {
    lastUpdate: m(/Last Update: (.+)\n/),
    nextUpdate: m(/Next Update: (.+)\n/),
    crlNumber: m(/X509v3 CRL Number: *\n\s*(\S+)\n/),
    aki: m(/X509v3 Authority Key Identifier: *\n\s*(?:keyid:)?([0-9A-F:]+)\n/),
  };
}

/** Revoked entries of `openssl crl -text` by serial. */
function entries(text: string): Map<string, TextEntry> {
  const out = new Map<string, TextEntry>();
  const list = text.split('Revoked Certificates:\n')[1]?.split(/\n    Signature Algorithm/)[0] ?? '';
  for (const block of list.split('    Serial Number: ').slice(1)) {
    const serial = /^([0-9A-F]+)\n/.exec(block)![1]!;
    const date = /Revocation Date: (.+)\n/.exec(block)![1]!;
    const reason = /X509v3 CRL Reason Code: *\n\s*(.+)/.exec(block)?.[1]?.trim();
    expect(out.has(serial)).toBe(false);
    out.set(serial, { date, reason });
  }
  return out;
}

function expectListed(text: string, input: CrlInput): void {
  const listed = entries(text);
  expect(listed.size).toBe(input.revoked.length);
  for (const r of input.revoked) {
    expect(listed.get(opensslSerial(r.serial)), r.serial).toEqual({ date: opensslDate(r.revokedAt), reason: REASON_TEXT[r.reason ?? 'unspecified'] });
  }
}

function deviceCert(id: string): { pem: string; serial: string } {
  const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const cert = ca.issueDevice({ deviceId: id, spkiDer: publicKey.export({ type: 'spki', format: 'der' }) });
  return { pem: cert.pem, serial: cert.serial };
}

/** `openssl verify -crl_check` of a device certificate against crl.pem. */
function verifyWithCrl(devicePem: string, crlPem: string): { status: number | null; out: string } {
  writeFileSync(path.join(tmp, 'device.pem'), devicePem);
  writeFileSync(path.join(tmp, 'crl.pem'), crlPem);
  return openssl(['verify', '-crl_check', '-CRLfile', 'crl.pem', '-CAfile', 'root.pem', '-untrusted', 'issuing.pem', 'device.pem']);
}

function window(): Pick<CrlInput, 'thisUpdate' | 'nextUpdate'> {
  const now = Date.now();
  return { thisUpdate: new Date(now - 60_000), nextUpdate: new Date(now + 7 * DAY) };
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'provisiond-ca-crl-'));
  ca = new CertificateAuthority({ dir: path.join(tmp, 'ca'), organization: 'Acme Devices', deviceValidityDays: 365, clock: systemClock });
  await ca.start();
  writeFileSync(path.join(tmp, 'root.pem'), ca.rootPem);
  writeFileSync(path.join(tmp, 'issuing.pem'), ca.issuingPem);
  writeFileSync(path.join(tmp, 'chain.pem'), ca.issuingPem + ca.rootPem);
  const text = opensslOk(['x509', '-in', 'issuing.pem', '-noout', '-text']);
  issuingSki = /Subject Key Identifier: *\n\s*([0-9A-F:]+)\n/.exec(text)![1]!;
});

afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('CertificateAuthority.crl', () => {
  it('signs an empty CRL without a revokedCertificates field', () => {
    const input: CrlInput = { revoked: [], thisUpdate: new Date('2031-03-04T05:06:07.890Z'), nextUpdate: new Date('2031-03-11T05:06:07Z'), crlNumber: 1n };
    const der = ca.crl(input);
    const text = verifiedText(der);
    expect(text).toContain('Version 2 (0x1)');
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(text).toContain('Issuer: O = Acme Devices, CN = Acme Devices Device Issuing CA');
    expect(text).toContain('No Revoked Certificates.');
    expect(header(text)).toEqual({ lastUpdate: 'Mar  4 05:06:07 2031 GMT', nextUpdate: 'Mar 11 05:06:07 2031 GMT', crlNumber: '1', aki: issuingSki });

    const info = readCrl(der);
    expect(info.hasRevokedField).toBe(false);
    expect(info.version).toBe(2);
    // the issuer Name is the issuing CA's subject, byte for byte
    expect(info.issuerDer.equals(readCertificate(new X509Certificate(ca.issuingPem).raw).subjectDer)).toBe(true);
    expect(info.extensions).toEqual([
      { oid: '2.5.29.35', critical: false },
      { oid: '2.5.29.20', critical: false },
    ]);
    expect(info.thisUpdate.toISOString()).toBe('2031-03-04T05:06:07.000Z');
    expect(der.includes(Buffer.from('310304050607Z'))).toBe(true); // UTCTime before 2050
  });

  it('lists one revoked serial with its reason, CRL number and AKI', () => {
    const device = deviceCert('crl-one');
    const input: CrlInput = {
      revoked: [{ serial: device.serial, revokedAt: new Date('2031-03-04T01:02:03Z'), reason: 'keyCompromise' }],
      thisUpdate: new Date('2031-03-04T05:00:00Z'),
      nextUpdate: new Date('2031-03-05T05:00:00Z'),
      crlNumber: 42n,
    };
    const text = verifiedText(ca.crl(input));
    expect(text).toContain(`Serial Number: ${device.serial.toUpperCase()}\n`);
    expect(text).toContain('Key Compromise');
    expect(header(text)).toEqual({ lastUpdate: 'Mar  4 05:00:00 2031 GMT', nextUpdate: 'Mar  5 05:00:00 2031 GMT', crlNumber: '42', aki: issuingSki });
    expectListed(text, input);
  });

  it('lists 500 revoked serials with every reason, edge-case serials and 2050+ GeneralizedTime', () => {
    const reasons: CrlReason[] = ['unspecified', 'keyCompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation'];
    const revoked: RevokedCertificate[] = [
      { serial: '1', revokedAt: new Date('2049-12-31T23:59:59Z'), reason: 'superseded' },
      { serial: 'ff', revokedAt: new Date('2050-01-01T00:00:00Z') }, // needs a sign octet
      { serial: '00abc', revokedAt: new Date('1999-05-05T05:05:05Z'), reason: 'keyCompromise' },
      { serial: 'ff'.repeat(20), revokedAt: new Date('2031-01-01T00:00:00Z'), reason: 'cessationOfOperation' },
    ];
    const base = Date.parse('2049-12-01T00:00:00Z');
    while (revoked.length < 500) {
      const i = revoked.length;
      revoked.push({ serial: crypto.randomBytes(16).toString('hex'), revokedAt: new Date(base + i * 3_600_000), reason: reasons[i % reasons.length]! });
    }
    const input: CrlInput = { revoked, thisUpdate: new Date('2050-02-01T00:00:00Z'), nextUpdate: new Date('2050-02-08T00:00:00Z'), crlNumber: (1n << 158n) + 7n };
    const der = ca.crl(input);
    const text = verifiedText(der);
    expectListed(text, input);
    for (const r of Object.values(REASON_TEXT)) if (r !== undefined) expect(text).toContain(r);
    // CRL Numbers of 128 bits and more are printed in hex by openssl
    expect(header(text)).toEqual({
      lastUpdate: 'Feb  1 00:00:00 2050 GMT',
      nextUpdate: 'Feb  8 00:00:00 2050 GMT',
      crlNumber: '0x' + ((1n << 158n) + 7n).toString(16).toUpperCase(),
      aki: issuingSki,
    });
    expect(der.includes(Buffer.from('20500201000000Z'))).toBe(true);

    const info = readCrl(crlToPem(der));
    expect(info.crlNumber).toBe((1n << 158n) + 7n);
    expect(info.revoked.map((r) => r.serial)).toEqual(revoked.map((r) => opensslSerial(r.serial).toLowerCase()));
    expect(info.revoked.map((r) => r.reason)).toEqual(revoked.map((r) => r.reason ?? 'unspecified'));
    expect(info.revoked.map((r) => r.revokedAt.getTime())).toEqual(revoked.map((r) => r.revokedAt.getTime()));
    const issuingKey = new X509Certificate(ca.issuingPem).publicKey;
    expect(crypto.verify('sha256', info.tbsDer, { key: issuingKey, dsaEncoding: 'der' }, info.signature)).toBe(true);
  });

  it('makes openssl verify -crl_check reject a revoked device certificate and accept the others', () => {
    const revokedDevice = deviceCert('crl-revoked');
    const goodDevice = deviceCert('crl-good');
    const crlPem = ca.crlPem({ revoked: [{ serial: revokedDevice.serial, revokedAt: new Date(Date.now() - 30_000), reason: 'superseded' }], ...window(), crlNumber: 2n });
    expect(crlPem.startsWith('-----BEGIN X509 CRL-----\n')).toBe(true);

    const bad = verifyWithCrl(revokedDevice.pem, crlPem);
    expect(bad.status).not.toBe(0);
    expect(bad.out).toContain('certificate revoked');

    const good = verifyWithCrl(goodDevice.pem, crlPem);
    expect(good.status, good.out).toBe(0);
    expect(good.out).toContain('device.pem: OK');

    // an empty CRL verifies too, and passes every device certificate
    const empty = verifyWithCrl(revokedDevice.pem, ca.crlPem({ revoked: [], ...window(), crlNumber: 3n }));
    expect(empty.status, empty.out).toBe(0);
    expect(empty.out).toContain('device.pem: OK');

    // a CRL past its nextUpdate is refused
    const expired = verifyWithCrl(
      goodDevice.pem,
      ca.crlPem({ revoked: [], thisUpdate: new Date(Date.now() - 2 * DAY), nextUpdate: new Date(Date.now() - DAY), crlNumber: 4n }),
    );
    expect(expired.status).not.toBe(0);
    expect(expired.out).toContain('CRL has expired');
  });

  it('round-trips PEM and DER through crlToPem / crlToDer', () => {
    const der = ca.crl({ revoked: [], ...window(), crlNumber: 0n });
    const pem = crlToPem(der);
    expect(crlToDer(pem).equals(der)).toBe(true);
    expect(crlToDer(Buffer.from(pem)).equals(der)).toBe(true);
    expect(crlToDer(der)).toBe(der);
    expect(() => crlToDer(ca.issuingPem)).toThrow(/no X509 CRL/);
    writeFileSync(path.join(tmp, 'rt.pem'), pem);
    expect(opensslOk(['crl', '-in', 'rt.pem', '-CAfile', 'chain.pem', '-noout', '-verify'])).toContain('verify OK');
  });

  it('rejects invalid input', () => {
    const ok = { ...window(), crlNumber: 1n };
    const at = new Date();
    const bad: Array<[string, CrlInput]> = [
      ['non-hex serial', { ...ok, revoked: [{ serial: 'xyz', revokedAt: at }] }],
      ['empty serial', { ...ok, revoked: [{ serial: '', revokedAt: at }] }],
      ['zero serial', { ...ok, revoked: [{ serial: '000', revokedAt: at }] }],
      ['21-octet serial', { ...ok, revoked: [{ serial: '01' + 'ff'.repeat(20), revokedAt: at }] }],
      ['duplicate serial', { ...ok, revoked: [{ serial: 'abc', revokedAt: at }, { serial: '0ABC', revokedAt: at }] }],
      ['invalid revokedAt', { ...ok, revoked: [{ serial: 'abc', revokedAt: new Date(NaN) }] }],
      ['unknown reason', { ...ok, revoked: [{ serial: 'abc', revokedAt: at, reason: 'removeFromCRL' as CrlReason }] }],
      ['nextUpdate = thisUpdate', { revoked: [], thisUpdate: at, nextUpdate: new Date(at.getTime() + 999 - (at.getTime() % 1000)), crlNumber: 1n }],
      ['nextUpdate before thisUpdate', { revoked: [], thisUpdate: at, nextUpdate: new Date(at.getTime() - DAY), crlNumber: 1n }],
      ['negative crlNumber', { ...ok, revoked: [], crlNumber: -1n }],
      ['crlNumber over 20 octets', { ...ok, revoked: [], crlNumber: 1n << 159n }],
      ['year 1949', { revoked: [], thisUpdate: new Date('1949-12-31T00:00:00Z'), nextUpdate: at, crlNumber: 1n }],
    ];
    for (const [what, input] of bad) {
      let err: unknown;
      try {
        ca.crl(input);
      } catch (e) {
        err = e;
      }
      expect(err instanceof RangeError || err instanceof TypeError, what).toBe(true);
    }
  });
});

describe('CRLs of operator-supplied issuing CAs', () => {
  /** Root (P-256) + issuing CA made with the openssl CLI; returns a started CA using them. */
  async function externalCa(name: string, newKey: string[], issuingKeyUsage: string): Promise<CertificateAuthority> {
    const dir = path.join(tmp, name);
    await fs.mkdir(dir);
    const cnf = path.join(dir, 'ext.cnf');
    writeFileSync(
      cnf,
      [
        '[req]',
        'distinguished_name = dn',
        '[dn]',
        '[root]',
        'basicConstraints = critical, CA:TRUE',
        'keyUsage = critical, keyCertSign, cRLSign',
        'subjectKeyIdentifier = hash',
        '[issuing]',
        'basicConstraints = critical, CA:TRUE, pathlen:0',
        `keyUsage = critical, ${issuingKeyUsage}`,
        'subjectKeyIdentifier = hash',
        'authorityKeyIdentifier = keyid',
        '',
      ].join('\n'),
    );
    const f = (n: string) => path.join(dir, n);
    opensslOk(['req', '-x509', '-config', cnf, '-extensions', 'root', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', f('root.key'), '-out', f('root.pem'), '-subj', `/O=Ext/CN=Ext Root ${name}`, '-days', '30']);
    opensslOk(['req', '-new', '-config', cnf, ...newKey, '-nodes', '-keyout', f('issuing.key'), '-out', f('issuing.csr'), '-subj', `/O=Ext/CN=Ext Issuing ${name}`]);
    opensslOk(['x509', '-req', '-in', f('issuing.csr'), '-CA', f('root.pem'), '-CAkey', f('root.key'), '-set_serial', '7', '-days', '30',
      '-extfile', cnf, '-extensions', 'issuing', '-out', f('issuing.pem')]);
    chmodSync(f('issuing.key'), 0o600);
    const ext = new CertificateAuthority({
      dir: path.join(dir, 'state'),
      organization: 'Ext',
      deviceValidityDays: 10,
      clock: systemClock,
      external: { issuingCertFile: f('issuing.pem'), issuingKeyFile: f('issuing.key'), rootCertFile: f('root.pem') },
    });
    await ext.start();
    return ext;
  }

  it.each([
    ['p384', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], 'ecdsa-with-SHA384'],
    ['rsa', ['-newkey', 'rsa:2048'], 'sha256WithRSAEncryption'],
    ['ed25519', ['-newkey', 'ed25519'], 'ED25519'],
  ])('signs with a %s issuing key', async (name, newKey, algorithm) => {
    const ext = await externalCa(name, newKey, 'keyCertSign, cRLSign');
    const serial = crypto.randomBytes(16).toString('hex');
    const der = ext.crl({ revoked: [{ serial, revokedAt: new Date(), reason: 'affiliationChanged' }], ...window(), crlNumber: 9n });
    writeFileSync(path.join(tmp, `${name}.der`), der);
    writeFileSync(path.join(tmp, `${name}-chain.pem`), ext.issuingPem + ext.rootPem);
    const out = opensslOk(['crl', '-inform', 'DER', '-in', `${name}.der`, '-CAfile', `${name}-chain.pem`, '-noout', '-verify', '-text']);
    expect(out).toContain('verify OK');
    expect(out).toContain(`Signature Algorithm: ${algorithm}`);
    expect(out).toContain(`Issuer: O = Ext, CN = Ext Issuing ${name}`);
    expect(out).toContain(`Serial Number: ${opensslSerial(serial)}`);
    expect(out).toContain('Affiliation Changed');
  });

  it('refuses to sign a CRL when the issuing certificate lacks cRLSign', async () => {
    const ext = await externalCa('nocrlsign', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], 'keyCertSign');
    let err: unknown;
    try {
      ext.crl({ revoked: [], ...window(), crlNumber: 1n });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CaError);
    expect((err as CaError).code).toBe('CA_MATERIAL_INVALID');
  });
});
