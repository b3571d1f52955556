/**
 * The service's own JWS/JWE/JWT code (src/provisioning/compact-jose.ts) against jose, the
 * reference implementation, in both directions, plus the tampering a verifier must refuse.
 */
import { generateKeyPairSync } from 'node:crypto';
import { CompactEncrypt, CompactSign, SignJWT, compactDecrypt, compactVerify, decodeProtectedHeader, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { concatKdf, ecdhRecipient, encryptEcdhEsA128CbcHs256, JwtError, signCompactEs256, signHs256Jwt, verifyHs256Jwt } from '../../src/provisioning/compact-jose.js';

const NOW = 1_800_000_000;
const key = Buffer.alloc(32, 7);
const flip = (part: string, at = 0): string => {
  const b = Buffer.from(part, 'base64url');
  b[at] = b[at]! ^ 1;
  return b.toString('base64url');
};

describe('ES256 compact JWS', () => {
  it('verifies with jose, keeps the header, and a changed payload or signature does not verify', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jws = signCompactEs256('{"a":1}', { typ: 'x+jws', x5c: ['AAAA'] }, privateKey);
    const { payload, protectedHeader } = await compactVerify(jws, publicKey, { algorithms: ['ES256'] });
    expect(Buffer.from(payload).toString()).toBe('{"a":1}');
    expect(protectedHeader).toEqual({ typ: 'x+jws', x5c: ['AAAA'], alg: 'ES256' });
    const [h, p, s] = jws.split('.') as [string, string, string];
    await expect(compactVerify(`${h}.${Buffer.from('{"a":2}').toString('base64url')}.${s}`, publicKey)).rejects.toThrow();
    await expect(compactVerify(`${h}.${p}.${flip(s, 5)}`, publicKey)).rejects.toThrow();
  });
});

describe('ECDH-ES + A128CBC-HS256 compact JWE', () => {
  for (const curve of ['P-256', 'P-384'] as const) {
    it(`jose decrypts what it encrypts to a ${curve} key; a flipped byte anywhere is refused`, async () => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
      const jwe = encryptEcdhEsA128CbcHs256('correct horse battery staple', ecdhRecipient(publicKey)!);
      expect(decodeProtectedHeader(jwe)).toMatchObject({ alg: 'ECDH-ES', enc: 'A128CBC-HS256', epk: { kty: 'EC', crv: curve } });
      const { plaintext } = await compactDecrypt(jwe, privateKey);
      expect(Buffer.from(plaintext).toString()).toBe('correct horse battery staple');
      const parts = jwe.split('.');
      expect(parts[1]).toBe('');
      for (const i of [2, 3, 4]) {
        const tampered = [...parts];
        tampered[i] = flip(tampered[i]!);
        await expect(compactDecrypt(tampered.join('.'), privateKey)).rejects.toThrow();
      }
      // another device's key cannot open it
      await expect(compactDecrypt(jwe, generateKeyPairSync('ec', { namedCurve: curve }).privateKey)).rejects.toThrow();
    });
  }

  it('the Concat KDF gives the RFC 7518 appendix C example key', () => {
    // RFC 7518 C: Z from the example keys, enc "A128GCM", apu "Alice", apv "Bob", 128 bits
    const z = Buffer.from([158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196]);
    const cek = concatKdf(z, 'A128GCM', 128, Buffer.from('Alice'), Buffer.from('Bob'));
    expect(cek.toString('base64url')).toBe('VqqN6vgjbSBcIijNcacQGg');
  });

  it('has no ECDH-ES recipient for a key that is not EC, and refuses a point that is not on the curve', () => {
    expect(ecdhRecipient(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey)).toBeUndefined();
    expect(ecdhRecipient(generateKeyPairSync('ed25519').publicKey)).toBeUndefined();
    const { point } = ecdhRecipient(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey)!;
    const off = Buffer.from(point);
    off[64] = off[64]! ^ 1; // y no longer matches x
    expect(() => encryptEcdhEsA128CbcHs256('x', { crv: 'P-256', point: off })).toThrow(/not a valid point/);
    expect(() => encryptEcdhEsA128CbcHs256('x', { crv: 'P-384', point })).toThrow(/not a valid point/);
  });

  it('the recipient point is the key\'s uncompressed point (its SPKI without the algorithm prefix)', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    expect(ecdhRecipient(publicKey)).toStrictEqual({ crv: 'P-256', point: spki.subarray(spki.length - 65) });
  });

  it('jose-made JWEs and ours have the same shape (so a device needs one decoder)', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const theirs = await new CompactEncrypt(Buffer.from('x')).setProtectedHeader({ alg: 'ECDH-ES', enc: 'A128CBC-HS256' }).encrypt(publicKey);
    const ours = encryptEcdhEsA128CbcHs256('x', ecdhRecipient(publicKey)!);
    expect(ours.split('.').map((p) => p.length > 0)).toEqual(theirs.split('.').map((p) => p.length > 0));
    expect(Object.keys(decodeProtectedHeader(ours)).sort()).toEqual(Object.keys(decodeProtectedHeader(theirs)).sort());
  });
});

describe('HS256 JWT', () => {
  const claims = { sub: 'dev-1', iss: 'provisiond:a', aud: 'provisiond:bootstrap', jti: 'j1', iat: NOW, exp: NOW + 60 };

  it('jose verifies ours and we verify jose\'s', async () => {
    const ours = signHs256Jwt(claims, key);
    const { payload } = await jwtVerify(ours, key, { algorithms: ['HS256'], currentDate: new Date(NOW * 1000) });
    expect(payload).toEqual(claims);
    const theirs = await new SignJWT({}).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setSubject('dev-1').setJti('j1').setIssuedAt(NOW).setExpirationTime(NOW + 60).sign(key);
    expect(verifyHs256Jwt(theirs, key, NOW)).toMatchObject({ sub: 'dev-1', jti: 'j1' });
  });

  it('refuses: expired, another key, alg none / HS512 / ES256, tampered claims, malformed input', async () => {
    const reason = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return (err as JwtError).reason;
      }
      return 'accepted';
    };
    const t = signHs256Jwt(claims, key);
    expect(reason(() => verifyHs256Jwt(t, key, NOW + 60))).toBe('expired');
    expect(reason(() => verifyHs256Jwt(t, Buffer.alloc(32, 8), NOW))).toBe('signature');
    const [, p, s] = t.split('.') as [string, string, string];
    const header = (h: object) => Buffer.from(JSON.stringify(h)).toString('base64url');
    expect(reason(() => verifyHs256Jwt(`${header({ alg: 'none' })}.${p}.`, key, NOW))).toBe('algorithm');
    expect(reason(() => verifyHs256Jwt(`${header({ alg: 'HS512', typ: 'JWT' })}.${p}.${s}`, key, NOW))).toBe('algorithm');
    const es = await new SignJWT({ sub: 'dev-1' }).setProtectedHeader({ alg: 'ES256' }).setExpirationTime(NOW + 60).sign(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
    expect(reason(() => verifyHs256Jwt(es, key, NOW))).toBe('algorithm');
    const forged = Buffer.from(JSON.stringify({ ...claims, sub: 'dev-2' })).toString('base64url');
    expect(reason(() => verifyHs256Jwt(`${t.split('.')[0]}.${forged}.${s}`, key, NOW))).toBe('signature');
    for (const bad of ['', 'a.b', 'a.b.c.d', `${t}=`, 'é.é.é', 'x'.repeat(5000)]) expect(reason(() => verifyHs256Jwt(bad, key, NOW))).toBe('malformed');
    const noExp = signHs256Jwt({ sub: 'dev-1' }, key);
    expect(reason(() => verifyHs256Jwt(noExp, key, NOW))).toBe('claims');
    const notObject = `${t.split('.')[0]}.${Buffer.from('[1]').toString('base64url')}`;
    expect(reason(() => verifyHs256Jwt(`${notObject}.${Buffer.alloc(32).toString('base64url')}`, key, NOW))).toBe('signature');
  });
});
