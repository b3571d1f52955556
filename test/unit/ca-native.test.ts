/**
 * The CA's native P-256 path (native/p256.c) against node:crypto, on random input (fast-check),
 * and every issued certificate on a large random sample: it parses with node:crypto's
 * X509Certificate, chains to the issuing CA, and openssl verifies it. The native module must be
 * built here (npm ci builds it; .ci/run has the compiler): these tests fail rather than skip when
 * it is missing, since the speed target depends on it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import crypto, { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertificateAuthority } from '../../src/ca/index.js';
import { native } from '../../src/ca/native.js';
import { systemClock } from '../../src/clock.js';
import { makeKeyAndCsr } from '../../firmware-sim/index.js';

const RUNS = Number(process.env.PROVISIOND_PROPERTY_RUNS ?? 200);

const keys = Array.from({ length: 64 }, () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }));
const point = (k: crypto.KeyObject) => (k.export({ type: 'spki', format: 'der' }) as Buffer).subarray(-65);
const nodeVerify = (k: crypto.KeyObject, data: Buffer, sig: Buffer) => {
  try {
    return crypto.verify('sha256', data, { key: k, dsaEncoding: 'der' }, sig);
  } catch {
    return false;
  }
};

describe('native P-256 verification', () => {
  it('is built and loaded', () => {
    expect(native, 'build/Release/provisiond_native.node (npm ci runs node-gyp)').toBeDefined();
  });

  it('agrees with node:crypto on valid, tampered and foreign signatures', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: keys.length - 1 }),
        fc.nat({ max: keys.length - 1 }),
        fc.uint8Array({ minLength: 0, maxLength: 600 }),
        fc.oneof(fc.constant('none'), fc.constant('data'), fc.constant('sig')),
        fc.nat(),
        (signer, checker, bytes, tamper, where) => {
          const data = Buffer.from(bytes);
          let sig = crypto.sign('sha256', data, { key: keys[signer]!.privateKey, dsaEncoding: 'der' });
          let checked = data;
          if (tamper === 'data') checked = Buffer.concat([data, Buffer.from([where & 0xff])]);
          if (tamper === 'sig') {
            sig = Buffer.from(sig);
            sig[where % sig.length]! ^= 1 + (where % 255);
          }
          const expected = nodeVerify(keys[checker]!.publicKey, checked, sig);
          expect(native!.verifyP256(point(keys[checker]!.publicKey), checked, sig)).toBe(expected);
        },
      ),
      { numRuns: RUNS * 5 },
    );
  });

  it('refuses points that are not on P-256 as invalid keys (-1), and leaves no OpenSSL error behind', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), (xy) => {
        const candidate = Buffer.concat([Buffer.from([4]), Buffer.from(xy)]);
        let onCurve = true;
        try {
          crypto.createPublicKey({ key: Buffer.concat([(keys[0]!.publicKey.export({ type: 'spki', format: 'der' }) as Buffer).subarray(0, -65), candidate]), format: 'der', type: 'spki' });
        } catch {
          onCurve = false;
        }
        const verdict = native!.verifyP256(candidate, Buffer.from('x'), Buffer.from([0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]));
        expect(verdict === -1).toBe(!onCurve);
        // node:crypto after a refusal still works (the error queue was cleared)
        expect(crypto.verify('sha256', Buffer.from('y'), keys[1]!.publicKey, crypto.sign('sha256', Buffer.from('y'), keys[1]!.privateKey))).toBe(true);
      }),
      { numRuns: RUNS },
    );
    for (const bad of [Buffer.alloc(0), Buffer.from([0]), Buffer.alloc(65, 4), Buffer.alloc(66, 4)]) expect(native!.verifyP256(bad, Buffer.from('x'), Buffer.alloc(8))).toBe(-1);
  });

  it('signs what node:crypto verifies, and refuses a scalar that is not a P-256 key', () => {
    const k = keys[0]!;
    const signer = native!.p256Signer(Buffer.from(k.privateKey.export({ format: 'jwk' }).d!, 'base64url'));
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
        const data = Buffer.from(bytes);
        expect(crypto.verify('sha256', data, { key: k.publicKey, dsaEncoding: 'der' }, native!.signP256(signer, data))).toBe(true);
      }),
      { numRuns: RUNS },
    );
    expect(() => native!.p256Signer(Buffer.alloc(32))).toThrow(/not a valid P-256 private key/);
    expect(() => native!.p256Signer(Buffer.alloc(32, 0xff))).toThrow(/not a valid P-256 private key/);
  });
});

describe('issued certificates, a random sample', () => {
  let dir: string;
  let ca: CertificateAuthority;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'provisiond-ca-native-'));
    ca = new CertificateAuthority({ dir: join(dir, 'ca'), organization: 'Sample', deviceValidityDays: 365, clock: systemClock });
    await ca.start();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('every certificate parses with X509Certificate, names the device, chains to the issuing CA; openssl verifies them all', async () => {
    // CSRs of every accepted kind; RSA keys are slow to make, so a few are reused under new ids
    const csrs = [
      ...(await Promise.all(Array.from({ length: 24 }, (_, i) => makeKeyAndCsr(`p256-${i}`)))).map((k) => k.csrPem),
      ...['prime256v1', 'secp384r1', 'rsa'].map((kind, i) => {
        const pair =
          kind === 'rsa'
            ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
            : crypto.generateKeyPairSync('ec', { namedCurve: kind });
        const keyFile = join(dir, `k${i}.pem`);
        writeFileSync(keyFile, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
        return execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', `/CN=ignored-${i}`], { encoding: 'utf8' });
      }),
    ];
    const issuing = new X509Certificate(ca.issuingPem);
    const deviceId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
    const pems: string[] = [];
    fc.assert(
      fc.property(deviceId, fc.nat({ max: csrs.length - 1 }), (id, which) => {
        const parsed = ca.parseCsr(csrs[which]!);
        const issued = ca.issueDevice({ deviceId: id, spkiDer: parsed.spkiDer });
        const cert = new X509Certificate(issued.der);
        expect(cert.subject).toContain(`CN=${id}`);
        expect(cert.subjectAltName).toContain(`URI:urn:provisiond:device:${id}`);
        expect(cert.serialNumber.toLowerCase().replace(/^0+/, '')).toBe(issued.serial.replace(/^0+/, ''));
        expect(cert.checkIssued(issuing)).toBe(true);
        expect(cert.verify(issuing.publicKey)).toBe(true);
        expect((cert.publicKey.export({ type: 'spki', format: 'der' }) as Buffer).equals(parsed.spkiDer)).toBe(true);
        pems.push(issued.pem);
      }),
      { numRuns: RUNS * 5 },
    );
    // openssl, every one of them, in batches of 200 files per call
    const root = join(dir, 'root.pem');
    const chain = join(dir, 'issuing.pem');
    writeFileSync(root, ca.rootPem);
    writeFileSync(chain, ca.issuingPem);
    for (let b = 0; b < pems.length; b += 200) {
      const files = pems.slice(b, b + 200).map((pem, i) => {
        const f = join(dir, `c${b + i}.pem`);
        writeFileSync(f, pem);
        return f;
      });
      const run = spawnSync('openssl', ['verify', '-CAfile', root, '-untrusted', chain, ...files], { encoding: 'utf8' });
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout.trim().split('\n').filter((l) => !l.endsWith(': OK'))).toEqual([]);
    }
    expect(pems.length).toBe(RUNS * 5);
  });

  it('a forged CSR is refused the same way on the native path', async () => {
    const { csrPem } = await makeKeyAndCsr('forged');
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 5]! ^= 0x01; // inside the signature
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    expect(() => ca.parseCsr(forged)).toThrow(expect.objectContaining({ code: 'CSR_SIGNATURE_INVALID' }));
    expect(ca.parseCsr(csrPem).keyFingerprint).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('without the native module (PROVISIOND_NATIVE=0)', () => {
  it('issues the same kind of certificate through node:crypto only', () => {
    const script = `
      import { mkdtempSync } from 'node:fs'; import { tmpdir } from 'node:os'; import { join } from 'node:path';
      import { X509Certificate } from 'node:crypto';
      import { CertificateAuthority } from './src/ca/index.ts'; import { native } from './src/ca/native.ts';
      import { systemClock } from './src/clock.ts'; import { makeKeyAndCsr } from './firmware-sim/index.ts';
      const ca = new CertificateAuthority({ dir: join(mkdtempSync(join(tmpdir(), 'nn-')), 'ca'), organization: 'X', deviceValidityDays: 30, clock: systemClock });
      await ca.start();
      const issued = ca.issueDevice({ deviceId: 'plain', spkiDer: ca.parseCsr((await makeKeyAndCsr('plain')).csrPem).spkiDer });
      const ok = new X509Certificate(issued.der).verify(new X509Certificate(ca.issuingPem).publicKey);
      console.log(JSON.stringify({ native: native !== undefined, ok }));`;
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: join(import.meta.dirname, '../..'),
      env: { ...process.env, PROVISIOND_NATIVE: '0' },
      encoding: 'utf8',
    });
    expect(run.status, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout.trim().split('\n').at(-1)!)).toEqual({ native: false, ok: true });
  });
});
