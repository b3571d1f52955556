/**
 * The three JOSE operations the service does once or more per device, written on node:crypto
 * directly: jose goes through WebCrypto (a key import, algorithm normalisation and promise hops
 * per call), which cost ~2 ms of CPU per provisioned device; these cost ~0.2 ms. Only the exact
 * algorithms the protocol uses are here (docs/protocol.md): ES256 JWS, ECDH-ES + A128CBC-HS256
 * JWE, HS256 JWT. Everything else (RSA device keys) still goes through jose. test/unit/
 * compact-jose.test.ts checks each against jose in both directions.
 */
import { createCipheriv, createECDH, createHash, createHmac, randomBytes, sign, timingSafeEqual, type KeyObject } from 'node:crypto';

const b64u = (data: Buffer | string): string => Buffer.from(data).toString('base64url');
const json64 = (value: unknown): string => b64u(JSON.stringify(value));

/** Compact JWS, ES256 (P-256 key): `header.payload.signature`, signature in IEEE P1363 form (r||s). */
export function signCompactEs256(payload: Buffer | string, header: Record<string, unknown>, key: KeyObject): string {
  const input = `${json64({ ...header, alg: 'ES256' })}.${b64u(payload)}`;
  return `${input}.${b64u(sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }))}`;
}

/** JWA curve names of the EC keys a device may hold, and OpenSSL's. */
const JWK_CURVES: Record<string, EcdhRecipient['crv']> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };
const OPENSSL_CURVES: Record<EcdhRecipient['crv'], string> = { 'P-256': 'prime256v1', 'P-384': 'secp384r1', 'P-521': 'secp521r1' };

/** The ECDH-ES curve name of an EC public key, or undefined for any other key. */
export function ecdhCurve(publicKey: KeyObject): EcdhRecipient['crv'] | undefined {
  if (publicKey.asymmetricKeyType !== 'ec') return undefined;
  return JWK_CURVES[publicKey.asymmetricKeyDetails?.namedCurve ?? ''];
}

/** The recipient of an ECDH-ES JWE: its JWA curve and its uncompressed public point (04 || x || y). */
export interface EcdhRecipient {
  crv: 'P-256' | 'P-384' | 'P-521';
  point: Buffer;
}

/** The ECDH-ES recipient for an EC public key (its point from the JWK export), or undefined for any other key. */
export function ecdhRecipient(publicKey: KeyObject): EcdhRecipient | undefined {
  const crv = ecdhCurve(publicKey);
  if (!crv) return undefined;
  const { x, y } = publicKey.export({ format: 'jwk' });
  return { crv, point: Buffer.concat([Buffer.from([4]), Buffer.from(x ?? '', 'base64url'), Buffer.from(y ?? '', 'base64url')]) };
}

/**
 * NIST SP 800-56A Concat KDF with SHA-256 as RFC 7518 §4.6.2 uses it for direct key agreement:
 * AlgorithmID = the "enc" value, PartyUInfo/PartyVInfo empty, SuppPubInfo = key length in bits.
 */
export function concatKdf(z: Buffer, enc: string, keyBits: number, apu = Buffer.alloc(0), apv = Buffer.alloc(0)): Buffer {
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const alg = Buffer.from(enc, 'ascii');
  const out: Buffer[] = [];
  for (let round = 1; out.length * 32 < keyBits / 8; round++) {
    out.push(createHash('sha256').update(u32(round)).update(z).update(u32(alg.length)).update(alg).update(u32(apu.length)).update(apu).update(u32(apv.length)).update(apv).update(u32(keyBits)).digest());
  }
  return Buffer.concat(out).subarray(0, keyBits / 8);
}

/**
 * Compact JWE with alg ECDH-ES (direct key agreement, empty encrypted-key part) and enc
 * A128CBC-HS256 (RFC 7518 §5.2.3): a fresh ephemeral key on the recipient's curve, CEK from the
 * Concat KDF, AES-128-CBC with PKCS#7 padding, HMAC-SHA-256 tag over AAD || IV || ciphertext || AL.
 * The agreement runs on raw points (node:crypto's ECDH): no key object is imported or exported,
 * which costs about half of diffieHellman() with KeyObjects. OpenSSL refuses a recipient point
 * that is not on the curve.
 */
export function encryptEcdhEsA128CbcHs256(plaintext: Buffer | string, recipient: EcdhRecipient): string {
  const curve = OPENSSL_CURVES[recipient.crv];
  if (!curve) throw new Error('ECDH-ES needs an EC P-256, P-384 or P-521 public key');
  const ephemeral = createECDH(curve);
  const epk = ephemeral.generateKeys();
  let z: Buffer;
  try {
    z = ephemeral.computeSecret(recipient.point);
  } catch (err) {
    throw new Error(`the recipient's ${recipient.crv} public key is not a valid point`, { cause: err });
  }
  const size = (epk.length - 1) / 2;
  const enc = 'A128CBC-HS256';
  const x = b64u(epk.subarray(1, 1 + size));
  const y = b64u(epk.subarray(1 + size));
  const header = json64({ alg: 'ECDH-ES', enc, epk: { x, crv: recipient.crv, kty: 'EC', y } });
  const cek = concatKdf(z, enc, 256);
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-128-cbc', cek.subarray(16), iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const aad = Buffer.from(header, 'ascii');
  const al = Buffer.alloc(8);
  al.writeBigUInt64BE(BigInt(aad.length * 8));
  const tag = createHmac('sha256', cek.subarray(0, 16)).update(aad).update(iv).update(ciphertext).update(al).digest().subarray(0, 16);
  return `${header}..${b64u(iv)}.${b64u(ciphertext)}.${b64u(tag)}`;
}

/** Claims of a signed HS256 JWT (the values are whatever the caller sets). */
export type JwtClaims = Record<string, string | number>;

/** HS256 JWT with the header { alg: HS256, typ: JWT }. */
export function signHs256Jwt(claims: JwtClaims, key: Uint8Array): string {
  const input = `${json64({ alg: 'HS256', typ: 'JWT' })}.${json64(claims)}`;
  return `${input}.${b64u(createHmac('sha256', key).update(input).digest())}`;
}

export class JwtError extends Error {
  constructor(
    readonly reason: 'malformed' | 'algorithm' | 'signature' | 'claims' | 'expired',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Verifies an HS256 JWT: exactly three base64url parts, header alg HS256 (nothing else is
 * accepted, "none" included), the MAC compared in constant time BEFORE the claims are parsed,
 * then `exp` against `nowSeconds`. Returns the claims; the caller checks iss, aud and the rest.
 */
export function verifyHs256Jwt(token: string, key: Uint8Array, nowSeconds: number): Record<string, unknown> {
  if (typeof token !== 'string' || token.length > 4096) throw new JwtError('malformed', 'not a JWT');
  const parts = token.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p))) throw new JwtError('malformed', 'not a compact JWT');
  const [h, p, s] = parts as [string, string, string];
  const header = parseJson(h);
  if (header.alg !== 'HS256' || (header.typ !== undefined && header.typ !== 'JWT') || header.crit !== undefined) {
    throw new JwtError('algorithm', 'only HS256 JWTs are accepted');
  }
  const expected = createHmac('sha256', key).update(`${h}.${p}`).digest();
  const given = Buffer.from(s, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new JwtError('signature', 'signature does not verify');
  const claims = parseJson(p);
  if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) throw new JwtError('claims', 'no "exp" claim');
  if (claims.exp <= nowSeconds) throw new JwtError('expired', '"exp" claim timestamp check failed');
  return claims;
}

function parseJson(part: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new JwtError('malformed', 'a part is not base64url JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new JwtError('malformed', 'a part is not a JSON object');
  return value as Record<string, unknown>;
}
