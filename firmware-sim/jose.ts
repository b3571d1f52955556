/**
 * The two JOSE operations a device performs (docs/protocol.md §11, §12), with node:crypto only:
 *   - splitting a compact JWS and checking an ES256 signature (raw r||s),
 *   - decrypting a compact JWE: ECDH-ES (direct key agreement, Concat KDF) or RSA-OAEP-256 key
 *     management, A128CBC-HS256 content encryption (RFC 7518 §4.6, §4.3, §5.2).
 * Everything else is rejected.
 */
import {
  constants,
  createDecipheriv,
  createHash,
  createECDH,
  createHmac,
  privateDecrypt,
  timingSafeEqual,
  verify,
  type ECDH,
  type KeyObject,
} from 'node:crypto';

export class JoseError extends Error {
  constructor(
    readonly code: string,
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`);
  }
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;

function b64url(segment: string, what: string): Buffer {
  if (!BASE64URL.test(segment) || segment.length % 4 === 1) throw new JoseError('JOSE_MALFORMED', `${what} is not base64url`);
  return Buffer.from(segment, 'base64url');
}

function jsonObject(bytes: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new JoseError('JOSE_MALFORMED', `${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new JoseError('JOSE_MALFORMED', `${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

export interface CompactJws {
  /** The three segments as received. */
  header: string;
  payload: string;
  signature: string;
}

/** Splits a compact JWS into its three base64url segments (not decoded). */
export function splitJws(jws: string): CompactJws {
  const parts = jws.split('.');
  if (parts.length !== 3) throw new JoseError('JOSE_MALFORMED', 'a compact JWS has three parts');
  const [header, payload, signature] = parts as [string, string, string];
  for (const [segment, what] of [
    [header, 'JWS header'],
    [payload, 'JWS payload'],
    [signature, 'JWS signature'],
  ] as const) {
    if (!BASE64URL.test(segment) || segment.length % 4 === 1) throw new JoseError('JOSE_MALFORMED', `${what} is not base64url`);
  }
  return { header, payload, signature };
}

/** Decodes a JWS/JWE protected header segment (a JSON object). */
export function decodeHeader(segment: string): Record<string, unknown> {
  return jsonObject(b64url(segment, 'protected header'), 'protected header');
}

/** ES256 over `header.payload`: the signature segment is raw r||s (64 bytes). */
export function verifyEs256(jws: CompactJws, publicKey: KeyObject): boolean {
  const sig = Buffer.from(jws.signature, 'base64url');
  if (sig.length !== 64) return false;
  try {
    return verify('sha256', Buffer.from(`${jws.header}.${jws.payload}`, 'ascii'), { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig);
  } catch {
    return false;
  }
}

export const JWE_ENC = 'A128CBC-HS256';
const ENC_ID = Buffer.from(JWE_ENC, 'ascii');
const CEK_BITS = 256;

const JWK_CURVE: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

function uint32be(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** Concat KDF (NIST SP 800-56A §5.8.1, RFC 7518 §4.6.2) for 256 bits: one SHA-256 round. */
export function concatKdf256(z: Buffer, algorithmId: Buffer, apu: Buffer, apv: Buffer): Buffer {
  return createHash('sha256')
    .update(uint32be(1))
    .update(z)
    .update(uint32be(algorithmId.length))
    .update(algorithmId)
    .update(uint32be(apu.length))
    .update(apu)
    .update(uint32be(apv.length))
    .update(apv)
    .update(uint32be(CEK_BITS))
    .digest();
}

function optionalB64url(header: Record<string, unknown>, name: string): Buffer {
  const value = header[name];
  if (value === undefined) return Buffer.alloc(0);
  if (typeof value !== 'string') throw new JoseError('JWE_INVALID', `${name} must be a base64url string`);
  return b64url(value, name);
}

/**
 * The device key's ECDH state, made once per key: its curve and a node:crypto ECDH object holding
 * the private scalar (computeSecret with a raw point costs about half of importing a JWK and
 * calling diffieHellman, and checks the point is on the curve all the same).
 */
const ecdhByKey = new WeakMap<KeyObject, { curve: string; bytes: number; ecdh: ECDH } | null>();

function ecdhOf(privateKey: KeyObject): { curve: string; bytes: number; ecdh: ECDH } | null {
  let state = ecdhByKey.get(privateKey);
  if (state === undefined) {
    const named = privateKey.asymmetricKeyDetails?.namedCurve ?? '';
    const curve = JWK_CURVE[named];
    const jwk = curve ? (privateKey.export({ format: 'jwk' }) as { d?: string }) : {};
    if (curve && jwk.d) {
      const ecdh = createECDH(named);
      ecdh.setPrivateKey(Buffer.from(jwk.d, 'base64url'));
      state = { curve, bytes: Buffer.from(jwk.d, 'base64url').length, ecdh };
    } else state = null;
    ecdhByKey.set(privateKey, state);
  }
  return state;
}

/** The content encryption key from ECDH-ES with the header's ephemeral public key. */
function ecdhEsKey(header: Record<string, unknown>, privateKey: KeyObject): Buffer {
  const epk = header.epk as Record<string, unknown> | undefined;
  const state = ecdhOf(privateKey);
  if (!state) throw new JoseError('JWE_INVALID', 'ECDH-ES needs an EC P-256, P-384 or P-521 key');
  const { curve, bytes, ecdh } = state;
  if (typeof epk !== 'object' || epk === null || epk.kty !== 'EC' || epk.crv !== curve || typeof epk.x !== 'string' || typeof epk.y !== 'string') {
    throw new JoseError('JWE_INVALID', `epk must be an EC ${curve} public key`);
  }
  const x = Buffer.from(epk.x, 'base64url');
  const y = Buffer.from(epk.y, 'base64url');
  if (x.length !== bytes || y.length !== bytes) throw new JoseError('JWE_INVALID', 'epk is not a valid public key');
  let z: Buffer;
  try {
    // uncompressed point 04 || x || y; computeSecret refuses a point that is not on the curve
    z = ecdh.computeSecret(Buffer.concat([Buffer.from([4]), x, y]));
  } catch {
    throw new JoseError('JWE_INVALID', 'epk is not a valid public key');
  }
  return concatKdf256(z, ENC_ID, optionalB64url(header, 'apu'), optionalB64url(header, 'apv'));
}

/**
 * Decrypts a compact JWE addressed to `privateKey`: alg ECDH-ES (EC keys, empty encrypted-key
 * segment) or RSA-OAEP-256 (RSA keys), enc A128CBC-HS256. The tag is checked, in constant time,
 * before anything is decrypted.
 */
export function decryptCompactJwe(jwe: string, privateKey: KeyObject): Buffer {
  const parts = jwe.split('.');
  if (parts.length !== 5) throw new JoseError('JOSE_MALFORMED', 'a compact JWE has five parts');
  const [h, ek, ivPart, ctPart, tagPart] = parts as [string, string, string, string, string];
  const header = decodeHeader(h);
  if (header.enc !== JWE_ENC) throw new JoseError('JWE_UNSUPPORTED', `enc must be ${JWE_ENC}`);
  if (header.zip !== undefined || header.crit !== undefined) throw new JoseError('JWE_UNSUPPORTED', 'zip and crit are not supported');
  const encryptedKey = b64url(ek, 'encrypted key');
  const iv = b64url(ivPart, 'iv');
  const ciphertext = b64url(ctPart, 'ciphertext');
  const tag = b64url(tagPart, 'tag');
  if (iv.length !== 16) throw new JoseError('JWE_INVALID', 'iv must be 16 bytes');
  if (tag.length !== 16) throw new JoseError('JWE_INVALID', 'tag must be 16 bytes');
  if (ciphertext.length === 0 || ciphertext.length % 16 !== 0) throw new JoseError('JWE_INVALID', 'ciphertext is not whole AES blocks');

  let cek: Buffer;
  if (header.alg === 'ECDH-ES' && privateKey.asymmetricKeyType === 'ec') {
    if (encryptedKey.length !== 0) throw new JoseError('JWE_INVALID', 'ECDH-ES has an empty encrypted key');
    cek = ecdhEsKey(header, privateKey);
  } else if (header.alg === 'RSA-OAEP-256' && privateKey.asymmetricKeyType === 'rsa') {
    try {
      cek = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, encryptedKey);
    } catch {
      throw new JoseError('JWE_DECRYPTION_FAILED', 'the encrypted key does not decrypt');
    }
    if (cek.length !== CEK_BITS / 8) throw new JoseError('JWE_DECRYPTION_FAILED', 'the content key has the wrong size');
  } else {
    throw new JoseError('JWE_UNSUPPORTED', `alg ${String(header.alg)} is not accepted for a ${String(privateKey.asymmetricKeyType)} key`);
  }

  const macKey = cek.subarray(0, 16);
  const encKey = cek.subarray(16, 32);
  const aad = Buffer.from(h, 'ascii');
  const al = Buffer.alloc(8);
  al.writeBigUInt64BE(BigInt(aad.length) * 8n);
  const expected = createHmac('sha256', macKey).update(aad).update(iv).update(ciphertext).update(al).digest().subarray(0, 16);
  if (!timingSafeEqual(expected, tag)) throw new JoseError('JWE_DECRYPTION_FAILED', 'authentication tag does not match');
  try {
    const decipher = createDecipheriv('aes-128-cbc', encKey, iv);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch {
    throw new JoseError('JWE_DECRYPTION_FAILED', 'ciphertext does not decrypt');
  }
}
