/**
 * PKCS#10 (RFC 2986) certification request parsing and proof-of-possession check.
 *
 * Supported keys: EC P-256, EC P-384 (named curves; compressed points are accepted and
 * normalised to the uncompressed form), RSA 2048..16384 bits with a public exponent of at most
 * 64 bits. Supported signatures: ecdsa-with-SHA256/384/512 (DER-encoded), sha256/384/512 with
 * RSA PKCS#1 v1.5. RSA-PSS (as key or signature algorithm), Ed25519/Ed448, other curves, DSA and
 * SHA-1 signatures are refused with CSR_KEY_UNSUPPORTED. Everything but the public key and the
 * signature is informational: the CA never copies subject or extensions from a CSR.
 *
 * Speed note: with OpenSSL 3.0, importing SPKI DER goes through the slow provider decoder
 * framework, so keys are imported from their JWK form (same validation, much cheaper for RSA).
 */
import crypto, { type KeyObject } from 'node:crypto';
import {
  Asn1Error,
  Tag,
  children,
  expectTag,
  parseDer,
  pemBlocks,
  raw,
  readBitStringBytes,
  readOid,
  readSmallInteger,
  sequenceOf,
  value,
  type Tlv,
} from './asn1.js';
import { digest } from './certificate.js';
import { CaError } from './errors.js';
import { native } from './native.js';

/** A verified certification request: only what the CA may use. */
export interface ParsedCsr {
  /** SubjectPublicKeyInfo DER, as in the CSR (EC points normalised to uncompressed form). */
  spkiDer: Buffer;
  publicKey: KeyObject;
  /** sha256(spkiDer), lower-case hex. */
  keyFingerprint: string;
  keyType: 'ec' | 'rsa';
  curve?: 'P-256' | 'P-384';
  /** EC: the uncompressed public point (04 || x || y). */
  point?: Buffer;
  rsaBits?: number;
  /** The subject the CSR asked for, RFC 4514 style (e.g. 'CN=foo,O=bar'); informational only. */
  requestedSubject: string;
}

/** Largest PEM text accepted (the MQTT schema caps CSRs at 16 KiB). */
export const MAX_CSR_PEM_LENGTH = 65_536;

const CSR_LABELS = new Set(['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);

const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const OID_RSA_ENCRYPTION = '1.2.840.113549.1.1.1';

interface CurveInfo {
  readonly name: 'P-256' | 'P-384';
  readonly opensslName: string;
  readonly size: number;
  /** DER of the SPKI up to (excluding) the uncompressed point. */
  readonly spkiPrefix: Buffer;
}

const CURVES: ReadonlyMap<string, CurveInfo> = new Map([
  [
    '1.2.840.10045.3.1.7',
    {
      name: 'P-256',
      opensslName: 'prime256v1',
      size: 32,
      spkiPrefix: Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex'),
    },
  ],
  [
    '1.3.132.0.34',
    { name: 'P-384', opensslName: 'secp384r1', size: 48, spkiPrefix: Buffer.from('3076301006072a8648ce3d020106052b81040022036200', 'hex') },
  ],
]);

const UNSUPPORTED_CURVES: Record<string, string> = {
  '1.3.132.0.35': 'P-521',
  '1.3.132.0.10': 'secp256k1',
};

const UNSUPPORTED_KEY_ALGORITHMS: Record<string, string> = {
  '1.3.101.110': 'X25519',
  '1.3.101.111': 'X448',
  '1.3.101.112': 'Ed25519',
  '1.3.101.113': 'Ed448',
  '1.2.840.113549.1.1.10': 'RSA-PSS',
  '1.2.840.10040.4.1': 'DSA',
};

interface SignatureAlgorithm {
  readonly hash: 'sha256' | 'sha384' | 'sha512';
  readonly keyType: 'ec' | 'rsa';
}

const SIGNATURE_ALGORITHMS: ReadonlyMap<string, SignatureAlgorithm> = new Map([
  ['1.2.840.10045.4.3.2', { hash: 'sha256', keyType: 'ec' }],
  ['1.2.840.10045.4.3.3', { hash: 'sha384', keyType: 'ec' }],
  ['1.2.840.10045.4.3.4', { hash: 'sha512', keyType: 'ec' }],
  ['1.2.840.113549.1.1.11', { hash: 'sha256', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.12', { hash: 'sha384', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.13', { hash: 'sha512', keyType: 'rsa' }],
]);

/** Attribute types shown in `requestedSubject`. */
const ATTRIBUTE_NAMES: Record<string, string> = {
  '2.5.4.3': 'CN',
  '2.5.4.5': 'serialNumber',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '0.9.2342.19200300.100.1.25': 'DC',
  '0.9.2342.19200300.100.1.1': 'UID',
  '1.2.840.113549.1.9.1': 'emailAddress',
};

const malformed = (message: string, cause?: unknown) =>
  new CaError('CSR_MALFORMED', message, cause === undefined ? undefined : { cause });
const unsupported = (message: string) => new CaError('CSR_KEY_UNSUPPORTED', message);

/** Parsed key material of a SubjectPublicKeyInfo. */
interface KeyInfo {
  keyType: 'ec' | 'rsa';
  curve?: 'P-256' | 'P-384';
  rsaBits?: number;
  jwk: crypto.JsonWebKey;
  /** EC: the uncompressed point. */
  point?: Buffer;
  /** Canonical SPKI when the CSR's differs (compressed EC point), else undefined. */
  normalisedSpki?: Buffer;
}

/**
 * Parses a PEM PKCS#10 request and verifies its signature with the public key it carries.
 * Throws only CaError: CSR_MALFORMED, CSR_KEY_UNSUPPORTED or CSR_SIGNATURE_INVALID.
 */
export function parseCsr(pem: string): ParsedCsr {
  try {
    return parseCsrUnchecked(pem);
  } catch (err) {
    if (err instanceof CaError) throw err;
    throw malformed(err instanceof Asn1Error ? `CSR is not valid DER: ${err.message}` : 'CSR could not be parsed', err);
  }
}

function parseCsrUnchecked(pem: string): ParsedCsr {
  if (typeof pem !== 'string') throw malformed('CSR must be a PEM string');
  if (pem.length > MAX_CSR_PEM_LENGTH) throw malformed('CSR is too large');
  let der: Buffer | undefined;
  let otherLabel: string | undefined;
  for (const block of pemBlocks(pem)) {
    if (!CSR_LABELS.has(block.label)) {
      otherLabel ??= block.label;
      continue;
    }
    if (der !== undefined) throw malformed('more than one CERTIFICATE REQUEST block');
    der = block.der;
  }
  if (der === undefined) {
    throw malformed(otherLabel === undefined ? 'no PEM CERTIFICATE REQUEST block' : `expected a CERTIFICATE REQUEST, got ${otherLabel}`);
  }

  // CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature }
  const top = sequenceOf(parseDer(der), 'CertificationRequest');
  if (top.length !== 3) throw malformed('CertificationRequest must have 3 elements');
  const [infoTlv, sigAlgTlv, sigTlv] = top as [Tlv, Tlv, Tlv];

  // CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, attributes [0] }
  const info = sequenceOf(infoTlv, 'CertificationRequestInfo');
  if (info.length < 3 || info.length > 4) throw malformed('CertificationRequestInfo must have 3 or 4 elements');
  if (readSmallInteger(info[0], 'version') !== 0) throw malformed('unsupported CSR version');
  const requestedSubject = formatName(info[1]);
  const spkiTlv = expectTag(info[2], Tag.SEQUENCE, 'subjectPKInfo');
  if (info[3] !== undefined) expectTag(info[3], 0xa0, 'attributes');

  const sigAlg = readAlgorithm(sigAlgTlv, 'signatureAlgorithm');
  const signature = readBitStringBytes(sigTlv, 'signature');

  const key = readKey(spkiTlv);

  const alg = SIGNATURE_ALGORITHMS.get(sigAlg.oid);
  if (alg === undefined) throw unsupported(`CSR signature algorithm ${sigAlg.oid} is not supported`);
  if (sigAlg.params !== undefined && sigAlg.params.tag !== Tag.NULL) throw malformed('unexpected signature algorithm parameters');
  if (alg.keyType !== key.keyType) throw new CaError('CSR_SIGNATURE_INVALID', 'signature algorithm does not match the key type');

  let publicKey: KeyObject | undefined;
  const makeKey = (): KeyObject => {
    try {
      return crypto.createPublicKey({ key: key.jwk, format: 'jwk' });
    } catch (err) {
      throw malformed('CSR public key is invalid', err);
    }
  };

  let ok: boolean;
  if (native !== undefined && key.curve === 'P-256' && alg.hash === 'sha256' && key.point !== undefined) {
    // the hot path (src/ca/native.ts): no EVP_PKEY for the device key; the KeyObject is made
    // only when a caller asks for it
    const verdict = native.verifyP256(key.point, Buffer.from(raw(infoTlv)), Buffer.from(signature));
    if (verdict === -1) throw malformed('CSR public key is invalid');
    ok = verdict;
  } else {
    publicKey = makeKey();
    try {
      ok = crypto.verify(alg.hash, raw(infoTlv), { key: publicKey, dsaEncoding: 'der' }, signature);
    } catch {
      ok = false;
    }
  }
  if (!ok) throw new CaError('CSR_SIGNATURE_INVALID');

  const spkiDer = key.normalisedSpki ?? Buffer.from(raw(spkiTlv));
  const result = {
    spkiDer,
    get publicKey(): KeyObject {
      return (publicKey ??= makeKey());
    },
    keyFingerprint: digest('sha256', spkiDer).toString('hex'),
    keyType: key.keyType,
    requestedSubject,
  } as ParsedCsr;
  if (key.curve !== undefined) result.curve = key.curve;
  if (key.point !== undefined) result.point = key.point;
  if (key.rsaBits !== undefined) result.rsaBits = key.rsaBits;
  return result;
}

function readAlgorithm(t: Tlv | undefined, what: string): { oid: string; params: Tlv | undefined } {
  const parts = sequenceOf(t, what);
  if (parts.length < 1 || parts.length > 2) throw malformed(`${what} must have 1 or 2 elements`);
  return { oid: readOid(parts[0], `${what} OID`), params: parts[1] };
}

function readKey(spkiTlv: Tlv): KeyInfo {
  const parts = children(spkiTlv);
  if (parts.length !== 2) throw malformed('subjectPKInfo must have 2 elements');
  const alg = readAlgorithm(parts[0], 'subjectPKInfo algorithm');
  const keyBits = readBitStringBytes(parts[1], 'subjectPublicKey');

  if (alg.oid === OID_EC_PUBLIC_KEY) {
    if (alg.params === undefined || alg.params.tag !== Tag.OID) throw unsupported('EC keys must use a named curve');
    const curveOid = readOid(alg.params, 'namedCurve');
    const curve = CURVES.get(curveOid);
    if (curve === undefined) {
      throw unsupported(`EC curve ${UNSUPPORTED_CURVES[curveOid] ?? curveOid} is not supported (use P-256 or P-384)`);
    }
    let point = keyBits;
    let normalisedSpki: Buffer | undefined;
    if (point.length === curve.size + 1 && (point[0] === 0x02 || point[0] === 0x03)) {
      point = crypto.ECDH.convertKey(point, curve.opensslName, undefined, undefined, 'uncompressed') as Buffer;
      normalisedSpki = Buffer.concat([curve.spkiPrefix, point]);
    } else if (point.length !== 2 * curve.size + 1 || point[0] !== 0x04) {
      throw malformed('invalid EC point encoding');
    }
    const jwk = {
      kty: 'EC',
      crv: curve.name,
      x: point.subarray(1, 1 + curve.size).toString('base64url'),
      y: point.subarray(1 + curve.size).toString('base64url'),
    };
    return normalisedSpki === undefined ? { keyType: 'ec', curve: curve.name, jwk, point } : { keyType: 'ec', curve: curve.name, jwk, point, normalisedSpki };
  }

  if (alg.oid === OID_RSA_ENCRYPTION) {
    if (alg.params !== undefined && alg.params.tag !== Tag.NULL) throw malformed('rsaEncryption parameters must be NULL');
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    const rsa = sequenceOf(parseDer(keyBits), 'RSAPublicKey');
    if (rsa.length !== 2) throw malformed('RSAPublicKey must have 2 elements');
    const n = readPositiveInteger(rsa[0], 'modulus');
    const e = readPositiveInteger(rsa[1], 'publicExponent');
    const bits = n.length * 8 - Math.clz32(n[0]!) + 24;
    if (bits < 2048) throw unsupported(`RSA keys must have at least 2048 bits (got ${bits})`);
    if (bits > 16384) throw unsupported(`RSA keys larger than 16384 bits are not supported (got ${bits})`);
    if (e.length > 8 || (e[e.length - 1]! & 1) === 0 || (e.length === 1 && e[0]! < 3)) throw unsupported('unsupported RSA public exponent');
    return { keyType: 'rsa', rsaBits: bits, jwk: { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') } };
  }

  const known = UNSUPPORTED_KEY_ALGORITHMS[alg.oid];
  throw unsupported(`${known ?? `key algorithm ${alg.oid}`} keys are not supported (use EC P-256, EC P-384 or RSA >= 2048 bits)`);
}

/** Magnitude bytes of a strictly-DER positive INTEGER (no sign octet). */
function readPositiveInteger(t: Tlv | undefined, what: string): Buffer {
  const v = value(expectTag(t, Tag.INTEGER, what));
  if (v.length === 0 || v[0]! & 0x80) throw malformed(`${what} must be positive`);
  if (v[0] === 0) {
    if (v.length === 1 || (v[1]! & 0x80) === 0) throw malformed(`${what} is not minimally encoded`);
    return v.subarray(1);
  }
  return v;
}

/** RFC 4514-style rendering of a Name (last RDN first); structure is checked strictly. */
function formatName(t: Tlv | undefined): string {
  const rdns = sequenceOf(t, 'subject').map((rdn) =>
    children(expectTag(rdn, Tag.SET, 'RelativeDistinguishedName'))
      .map((ava) => {
        const parts = sequenceOf(ava, 'AttributeTypeAndValue');
        if (parts.length !== 2) throw malformed('AttributeTypeAndValue must have 2 elements');
        const type = readOid(parts[0], 'attribute type');
        return `${ATTRIBUTE_NAMES[type] ?? type}=${formatValue(parts[1]!)}`;
      })
      .join('+'),
  );
  return rdns.reverse().join(',');
}

function formatValue(t: Tlv): string {
  const v = value(t);
  let s: string;
  switch (t.tag) {
    case Tag.UTF8_STRING:
      s = v.toString('utf8');
      break;
    case Tag.PRINTABLE_STRING:
    case Tag.IA5_STRING:
    case Tag.T61_STRING:
      s = v.toString('latin1');
      break;
    case Tag.BMP_STRING:
      s = v.length % 2 === 0 ? Buffer.from(v).swap16().toString('utf16le') : '';
      break;
    default:
      return '#' + raw(t).toString('hex');
  }
  // Escape RFC 4514 specials and neutralise control characters (the value ends up in logs).
  return s
    .replace(/[\\,+"<>;=]/g, (c) => '\\' + c)
    .replace(/^[ #]|[ ]$/g, (c) => '\\' + c)
    .replace(/[\u0000-\u001f\u007f]/g, (c) => '\\' + c.charCodeAt(0).toString(16).padStart(2, '0'));
}
