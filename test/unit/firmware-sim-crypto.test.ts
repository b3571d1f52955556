/**
 * The simulated device's own crypto (firmware-sim/csr.ts, firmware-sim/jose.ts): its CSR against
 * OpenSSL and @peculiar/x509, its JWE decryption against what jose encrypts, and the tampering it
 * must refuse.
 */
import 'reflect-metadata'; // required by @peculiar/x509
import { execFileSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { CompactEncrypt } from 'jose';
import { describe, expect, it } from 'vitest';
import { makeKeyAndCsr } from '../../firmware-sim/device.js';
import { buildCsrDer, der, derLength, spkiDer, toPem } from '../../firmware-sim/csr.js';
import { concatKdf256 } from '../../firmware-sim/jose.js';
import { decryptSecret } from '../../firmware-sim/protocol.js';
import { EC_PRIVATE_KEY_PEM_HEADER } from '../helpers/pem.js';

const openssl = (args: string[], input: string): string => execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });

describe('DER lengths', () => {
  it('uses the short form below 128 and the minimal long form above', () => {
    expect(derLength(0).toString('hex')).toBe('00');
    expect(derLength(127).toString('hex')).toBe('7f');
    expect(derLength(128).toString('hex')).toBe('8180');
    expect(derLength(255).toString('hex')).toBe('81ff');
    expect(derLength(256).toString('hex')).toBe('820100');
    expect(derLength(65_536).toString('hex')).toBe('83010000');
    expect(der(0x04, Buffer.alloc(300)).subarray(0, 4).toString('hex')).toBe('0482012c');
    expect(() => derLength(-1)).toThrow(RangeError);
  });
});

describe('makeKeyAndCsr', () => {
  it('makes a CSR that OpenSSL verifies and @peculiar/x509 parses, with CN = device id', async () => {
    const made = await makeKeyAndCsr('thermo-0042');
    expect(made.csrPem).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----\n([A-Za-z0-9+/=]{1,64}\n)+-----END CERTIFICATE REQUEST-----\n$/);
    expect(made.privateKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(made.keyPem).toContain(EC_PRIVATE_KEY_PEM_HEADER);

    const out = openssl(['req', '-verify', '-noout', '-subject'], made.csrPem);
    expect(out).toMatch(/subject=CN\s*=\s*thermo-0042/);
    // "verify OK" goes to stderr with OpenSSL 3; run it through a shell to see both streams
    expect(execFileSync('sh', ['-c', 'openssl req -verify -noout 2>&1'], { input: made.csrPem, encoding: 'utf8' })).toMatch(/verify OK/i);

    const csr = new x509.Pkcs10CertificateRequest(made.csrPem);
    expect(await csr.verify()).toBe(true);
    expect(csr.subject).toBe('CN=thermo-0042');
    expect(csr.signatureAlgorithm).toMatchObject({ name: 'ECDSA', hash: { name: 'SHA-256' } });
    // the CSR's key is the returned key's public half
    const spki = Buffer.from(csr.publicKey.rawData);
    expect(spki.equals(createPublicKey(made.privateKey).export({ type: 'spki', format: 'der' }))).toBe(true);
  });

  it('encodes long and non-ASCII subjects (long-form lengths, UTF8String)', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const name = `device-${'x'.repeat(200)}-ü`;
    const pem = toPem('CERTIFICATE REQUEST', buildCsrDer(name, publicKey, privateKey));
    expect(execFileSync('sh', ['-c', 'openssl req -verify -noout 2>&1'], { input: pem, encoding: 'utf8' })).toMatch(/verify OK/i);
    const csr = new x509.Pkcs10CertificateRequest(pem);
    expect(await csr.verify()).toBe(true);
    expect(csr.subjectName.getField('CN')).toEqual([name]);
  });

  it('assembles the SubjectPublicKeyInfo byte for byte as OpenSSL encodes it (P-256 from the JWK, others exported)', () => {
    for (let i = 0; i < 200; i++) {
      const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      expect(spkiDer(publicKey).toString('hex')).toBe(publicKey.export({ type: 'spki', format: 'der' }).toString('hex'));
    }
    for (const key of [generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey, generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey]) {
      expect(spkiDer(key).equals(key.export({ type: 'spki', format: 'der' }))).toBe(true);
    }
  });

  it('a changed byte in the signed part no longer verifies', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const bytes = buildCsrDer('d1', publicKey, privateKey);
    const at = bytes.indexOf(Buffer.from('d1'));
    bytes[at] = 'e'.charCodeAt(0);
    const csr = new x509.Pkcs10CertificateRequest(bytes);
    expect(await csr.verify()).toBe(false);
  });
});

const flip = (part: string, at = 0): string => {
  const b = Buffer.from(part, 'base64url');
  b[at] = b[at]! ^ 1;
  return b.toString('base64url');
};

const encrypt = (secret: string, publicKey: KeyObject, header: Record<string, unknown>, params: { apu?: Uint8Array; apv?: Uint8Array } = {}) =>
  new CompactEncrypt(Buffer.from(secret, 'utf8'))
    .setProtectedHeader(header as never)
    .setKeyManagementParameters(params)
    .encrypt(publicKey);

describe('decryptSecret', () => {
  for (const curve of ['P-256', 'P-384'] as const) {
    it(`decrypts jose's ECDH-ES + A128CBC-HS256 to an EC ${curve} key; a flipped byte is refused`, async () => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
      const jwe = await encrypt('correct horse battery staple', publicKey, { alg: 'ECDH-ES', enc: 'A128CBC-HS256' });
      await expect(decryptSecret(jwe, privateKey)).resolves.toBe('correct horse battery staple');
      const parts = jwe.split('.');
      // iv, ciphertext, tag
      for (const i of [2, 3, 4]) {
        const tampered = [...parts];
        tampered[i] = flip(tampered[i]!);
        await expect(decryptSecret(tampered.join('.'), privateKey)).rejects.toMatchObject({ code: 'JWE_DECRYPTION_FAILED' });
      }
      // the last tag byte too (a prefix compare would miss it)
      const lastTag = [...parts];
      lastTag[4] = flip(lastTag[4]!, 15);
      await expect(decryptSecret(lastTag.join('.'), privateKey)).rejects.toMatchObject({ code: 'JWE_DECRYPTION_FAILED' });
      // another device's key
      await expect(decryptSecret(jwe, generateKeyPairSync('ec', { namedCurve: curve }).privateKey)).rejects.toMatchObject({
        code: 'JWE_DECRYPTION_FAILED',
      });
    });
  }

  it('takes apu and apv into the key derivation', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwe = await encrypt('with party info', publicKey, { alg: 'ECDH-ES', enc: 'A128CBC-HS256' }, { apu: Buffer.from('Alice'), apv: Buffer.from('Bob') });
    await expect(decryptSecret(jwe, privateKey)).resolves.toBe('with party info');
  });

  it('decrypts a long, non-ASCII secret (several AES blocks)', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const secret = `pässwörd-${'z'.repeat(100)}`;
    await expect(decryptSecret(await encrypt(secret, publicKey, { alg: 'ECDH-ES', enc: 'A128CBC-HS256' }), privateKey)).resolves.toBe(secret);
  });

  it('decrypts jose RSA-OAEP-256 + A128CBC-HS256 to an RSA key; a changed encrypted key is refused', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwe = await encrypt('rsa secret', publicKey, { alg: 'RSA-OAEP-256', enc: 'A128CBC-HS256' });
    await expect(decryptSecret(jwe, privateKey)).resolves.toBe('rsa secret');
    const parts = jwe.split('.');
    parts[1] = flip(parts[1]!, 10);
    await expect(decryptSecret(parts.join('.'), privateKey)).rejects.toMatchObject({ code: 'JWE_DECRYPTION_FAILED' });
  });

  it('refuses other algorithms and encryptions, and a header that was changed', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    await expect(decryptSecret(await encrypt('x', ec.publicKey, { alg: 'ECDH-ES+A128KW', enc: 'A128CBC-HS256' }), ec.privateKey)).rejects.toMatchObject({
      code: 'JWE_UNSUPPORTED',
    });
    await expect(decryptSecret(await encrypt('x', ec.publicKey, { alg: 'ECDH-ES', enc: 'A256GCM' }), ec.privateKey)).rejects.toMatchObject({
      code: 'JWE_UNSUPPORTED',
    });
    await expect(decryptSecret(await encrypt('x', rsa.publicKey, { alg: 'RSA-OAEP', enc: 'A128CBC-HS256' }), rsa.privateKey)).rejects.toMatchObject({
      code: 'JWE_UNSUPPORTED',
    });
    // ECDH-ES JWE to an RSA key (alg does not fit the key)
    const ecJwe = await encrypt('x', ec.publicKey, { alg: 'ECDH-ES', enc: 'A128CBC-HS256' });
    await expect(decryptSecret(ecJwe, rsa.privateKey)).rejects.toMatchObject({ code: 'JWE_UNSUPPORTED' });
    // "dir" with a guessed key
    const [, ...rest] = ecJwe.split('.');
    const dirHeader = Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A128CBC-HS256' })).toString('base64url');
    await expect(decryptSecret([dirHeader, ...rest].join('.'), ec.privateKey)).rejects.toMatchObject({ code: 'JWE_UNSUPPORTED' });
    // the header is authenticated: the same header with another (valid) epk no longer matches the tag
    const header = JSON.parse(Buffer.from(ecJwe.split('.')[0]!, 'base64url').toString()) as { epk: Record<string, string> };
    const otherEpk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const swapped = Buffer.from(JSON.stringify({ ...header, epk: { kty: 'EC', crv: 'P-256', x: otherEpk.x, y: otherEpk.y } })).toString('base64url');
    await expect(decryptSecret([swapped, ...rest].join('.'), ec.privateKey)).rejects.toMatchObject({ code: 'JWE_DECRYPTION_FAILED' });
    // an epk on another curve, and one that is not a point on the curve
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'jwk' });
    const wrongCurve = Buffer.from(JSON.stringify({ ...header, epk: { kty: 'EC', crv: 'P-384', x: p384.x, y: p384.y } })).toString('base64url');
    await expect(decryptSecret([wrongCurve, ...rest].join('.'), ec.privateKey)).rejects.toMatchObject({ code: 'JWE_INVALID' });
    const offCurve = Buffer.from(JSON.stringify({ ...header, epk: { ...header.epk, y: flip(header.epk.y!, 31) } })).toString('base64url');
    await expect(decryptSecret([offCurve, ...rest].join('.'), ec.privateKey)).rejects.toMatchObject({ code: 'JWE_INVALID' });
    // not five parts, not base64url
    await expect(decryptSecret('a.b.c', ec.privateKey)).rejects.toMatchObject({ code: 'JOSE_MALFORMED' });
    await expect(decryptSecret(ecJwe.replace('.', '.!'), ec.privateKey)).rejects.toMatchObject({ code: 'JOSE_MALFORMED' });
  });

  it('Concat KDF matches the input laid out in docs/protocol.md §12.1', () => {
    // 00000001 || Z || 0000000d "A128CBC-HS256" || 00000000 || 00000000 || 00000100, hashed once
    const z = Buffer.alloc(32, 0xab);
    const other = Buffer.from(`0000000d${Buffer.from('A128CBC-HS256').toString('hex')}000000000000000000000100`, 'hex');
    const expected = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: Buffer.concat([Buffer.from('00000001', 'hex'), z, other]) });
    expect(concatKdf256(z, Buffer.from('A128CBC-HS256'), Buffer.alloc(0), Buffer.alloc(0)).equals(expected)).toBe(true);
  });
});
