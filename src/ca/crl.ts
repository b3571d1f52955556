/**
 * X.509 v2 certificate revocation lists (RFC 5280 §5): encoding and signing with the issuing CA's
 * key, plus a strict reader for the CRLs built here (node:crypto cannot parse CRLs).
 */
import {
  Asn1Error,
  Tag,
  bitString,
  children,
  expectTag,
  explicit,
  integer,
  integerFromBuffer,
  octetString,
  oid,
  parseDer,
  pemBlocks,
  pemEncode,
  raw,
  readBitStringBytes,
  readOid,
  readSmallInteger,
  sequence,
  sequenceOf,
  time,
  tlv,
  value,
  type Tlv,
} from './asn1.js';
import { OID, authorityKeyIdentifier, extension, signWith, type Signer } from './certificate.js';

/** CRLReason values the CA issues (RFC 5280 §5.3.1); 'unspecified' is encoded by omitting the reasonCode. */
export type CrlReason = 'unspecified' | 'keyCompromise' | 'affiliationChanged' | 'superseded' | 'cessationOfOperation';

/** One revoked certificate. */
export interface RevokedCertificate {
  /** Serial number as hex (the positive INTEGER's value; IssuedCertificate.serial is this form). */
  serial: string;
  revokedAt: Date;
  /** Default 'unspecified' (no reasonCode entry extension). */
  reason?: CrlReason;
}

/** What a CRL lists and when; times are encoded to the second (fractions dropped). */
export interface CrlInput {
  revoked: readonly RevokedCertificate[];
  thisUpdate: Date;
  /** Must be later than thisUpdate (after truncation to the second). */
  nextUpdate: Date;
  /** Monotonically increasing per issuer (the caller keeps it); 0 <= crlNumber < 2^159 (at most 20 octets). */
  crlNumber: bigint;
}

/** The issuing CA as a CRL signer. */
export interface CrlIssuer {
  /** The CA's subject Name, exactly as encoded in its certificate. */
  subjectDer: Buffer;
  /** The CA's subject key identifier (goes into the CRL's authorityKeyIdentifier). */
  keyId: Buffer;
  signer: Signer;
}

export const CRL_OID = {
  cRLNumber: '2.5.29.20',
  reasonCode: '2.5.29.21',
} as const;

/** CRLReason ENUMERATED values (RFC 5280 §5.3.1). */
export const CRL_REASON_CODES = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;

const ISSUABLE_REASONS: ReadonlySet<string> = new Set<CrlReason>(['unspecified', 'keyCompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation']);
const REASON_BY_CODE = new Map<number, string>(Object.entries(CRL_REASON_CODES).map(([k, v]) => [v, k]));

const ENUMERATED = 0x0a;
const VERSION_V2 = integer(1);
const REASON_OID_DER = oid(CRL_OID.reasonCode);
/** Entry extensions [reasonCode] per reason, precomputed (absent for 'unspecified'). */
const REASON_EXTENSIONS = new Map<string, Buffer>(
  [...ISSUABLE_REASONS]
    .filter((r) => r !== 'unspecified')
    .map((r) => [r, sequence(sequence(REASON_OID_DER, octetString(tlv(ENUMERATED, Buffer.from([CRL_REASON_CODES[r as CrlReason]])))))]),
);

const HEX = /^[0-9a-fA-F]+$/;
const MAX_SERIAL_OCTETS = 20;
const MAX_CRL_NUMBER = 1n << 159n;

/**
 * Builds and signs a CertificateList (RFC 5280 §5.1): v2, the issuer's signature algorithm, its
 * subject Name verbatim, thisUpdate/nextUpdate (UTCTime through 2049, GeneralizedTime after),
 * revokedCertificates in the given order (omitted when empty) with a reasonCode entry extension
 * unless 'unspecified', and the non-critical authorityKeyIdentifier and cRLNumber extensions.
 * Throws TypeError/RangeError for invalid input (bad hex, duplicate serial, dates out of order).
 */
export function buildCrl(input: CrlInput, issuer: CrlIssuer): Buffer {
  if (input === null || typeof input !== 'object' || !Array.isArray(input.revoked)) throw new TypeError('CRL input must have a revoked array');
  const thisUpdate = checkDate(input.thisUpdate, 'thisUpdate');
  const nextUpdate = checkDate(input.nextUpdate, 'nextUpdate');
  if (Math.floor(nextUpdate.getTime() / 1000) <= Math.floor(thisUpdate.getTime() / 1000)) {
    throw new RangeError('nextUpdate must be later than thisUpdate');
  }
  if (typeof input.crlNumber !== 'bigint' || input.crlNumber < 0n || input.crlNumber >= MAX_CRL_NUMBER) {
    throw new RangeError('crlNumber must be a bigint in [0, 2^159)');
  }

  const seen = new Set<string>();
  const entries: Buffer[] = [];
  input.revoked.forEach((entry, i) => {
    const what = `revoked[${i}]`;
    if (entry === null || typeof entry !== 'object') throw new TypeError(`${what} must be an object`);
    const magnitude = serialMagnitude(entry.serial, what);
    const key = magnitude.toString('hex');
    if (seen.has(key)) throw new RangeError(`${what}: serial ${entry.serial} is listed twice`);
    seen.add(key);
    const reason = entry.reason ?? 'unspecified';
    if (!ISSUABLE_REASONS.has(reason)) throw new RangeError(`${what}: unsupported reason ${String(reason)}`);
    const parts = [integerFromBuffer(magnitude), time(checkDate(entry.revokedAt, `${what}.revokedAt`))];
    const ext = REASON_EXTENSIONS.get(reason);
    if (ext !== undefined) parts.push(ext);
    entries.push(tlv(Tag.SEQUENCE, parts));
  });

  const tbs = tlv(Tag.SEQUENCE, [
    VERSION_V2,
    issuer.signer.algorithmDer,
    issuer.subjectDer,
    time(thisUpdate),
    time(nextUpdate),
    ...(entries.length > 0 ? [tlv(Tag.SEQUENCE, entries)] : []),
    explicit(
      0,
      sequence(
        extension(OID.authorityKeyIdentifier, false, authorityKeyIdentifier(issuer.keyId)),
        extension(CRL_OID.cRLNumber, false, bigintInteger(input.crlNumber)),
      ),
    ),
  ]);
  const signature = signWith(issuer.signer, tbs);
  return sequence(tbs, issuer.signer.algorithmDer, bitString(signature));
}

/** PEM ("X509 CRL") for a CRL DER. */
export function crlToPem(der: Buffer): string {
  return pemEncode('X509 CRL', der);
}

/** CRL DER from PEM text (the first "X509 CRL" block) or from DER bytes (returned as given). */
export function crlToDer(pemOrDer: string | Buffer): Buffer {
  if (Buffer.isBuffer(pemOrDer) && pemOrDer[0] === Tag.SEQUENCE) return pemOrDer;
  const text = Buffer.isBuffer(pemOrDer) ? pemOrDer.toString('latin1') : pemOrDer;
  const block = pemBlocks(text).find((b) => b.label === 'X509 CRL');
  if (block === undefined) throw new Asn1Error('no X509 CRL PEM block');
  return block.der;
}

/** A CRL read back (see readCrl). */
export interface CrlInfo {
  /** 2 for v2 CRLs, 1 when the version field is absent. */
  version: number;
  /** Signature AlgorithmIdentifier DER (the outer one; readCrl checks it equals the inner one). */
  signatureAlgorithmDer: Buffer;
  issuerDer: Buffer;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  /** Entries in CRL order; serial is lower-case hex of the value (even length, no sign octet). */
  revoked: { serial: string; revokedAt: Date; reason: string }[];
  /** True when the revokedCertificates field is present (an empty CRL must omit it). */
  hasRevokedField: boolean;
  crlNumber: bigint | undefined;
  authorityKeyId: Buffer | undefined;
  /** Extension OIDs in order with criticality (crlExtensions). */
  extensions: { oid: string; critical: boolean }[];
  /** The signed TBSCertList bytes and the signature (for crypto.verify). */
  tbsDer: Buffer;
  signature: Buffer;
}

/**
 * Reads a CRL (PEM or DER) strictly enough for tests and sanity checks; it does not verify the
 * signature (use crypto.verify on tbsDer/signature). Throws Asn1Error on malformed input.
 */
export function readCrl(pemOrDer: string | Buffer): CrlInfo {
  const der = crlToDer(pemOrDer);
  const top = sequenceOf(parseDer(der), 'CertificateList');
  if (top.length !== 3) throw new Asn1Error('CertificateList must have 3 elements');
  const tbsTlv = expectTag(top[0], Tag.SEQUENCE, 'tbsCertList');
  const outerAlg = raw(expectTag(top[1], Tag.SEQUENCE, 'signatureAlgorithm'));
  const signature = readBitStringBytes(top[2], 'signatureValue');
  const tbs = children(tbsTlv);
  let i = 0;
  let version = 1;
  if (tbs[0]?.tag === Tag.INTEGER) {
    version = readSmallInteger(tbs[0], 'version') + 1;
    i++;
  }
  const innerAlg = raw(expectTag(tbs[i++], Tag.SEQUENCE, 'signature'));
  if (!innerAlg.equals(outerAlg)) throw new Asn1Error('signature algorithms differ');
  const issuer = expectTag(tbs[i++], Tag.SEQUENCE, 'issuer');
  const thisUpdate = readTime(tbs[i++], 'thisUpdate');
  let nextUpdate: Date | undefined;
  if (tbs[i]?.tag === Tag.UTC_TIME || tbs[i]?.tag === Tag.GENERALIZED_TIME) nextUpdate = readTime(tbs[i++], 'nextUpdate');
  const revoked: CrlInfo['revoked'] = [];
  let hasRevokedField = false;
  if (tbs[i]?.tag === Tag.SEQUENCE) {
    hasRevokedField = true;
    for (const entry of sequenceOf(tbs[i++], 'revokedCertificates')) {
      const parts = sequenceOf(entry, 'revokedCertificate');
      const serial = readSerial(parts[0]);
      const revokedAt = readTime(parts[1], 'revocationDate');
      let reason = 'unspecified';
      if (parts[2] !== undefined) {
        for (const ext of readExtensions(parts[2])) {
          if (ext.oid !== CRL_OID.reasonCode) continue;
          const e = value(expectTag(parseDer(ext.value), ENUMERATED, 'CRLReason'));
          if (e.length !== 1) throw new Asn1Error('CRLReason: unsupported size');
          reason = REASON_BY_CODE.get(e[0]!) ?? `unknown(${e[0]})`;
        }
      }
      if (parts.length > 3) throw new Asn1Error('revokedCertificate has too many elements');
      revoked.push({ serial, revokedAt, reason });
    }
  }
  let crlNumber: bigint | undefined;
  let authorityKeyId: Buffer | undefined;
  const extensions: CrlInfo['extensions'] = [];
  if (tbs[i]?.tag === 0xa0) {
    const wrapped = children(tbs[i++]!);
    if (wrapped.length !== 1) throw new Asn1Error('crlExtensions: expected one SEQUENCE');
    for (const ext of readExtensions(wrapped[0]!)) {
      extensions.push({ oid: ext.oid, critical: ext.critical });
      if (ext.oid === CRL_OID.cRLNumber) {
        const v = value(expectTag(parseDer(ext.value), Tag.INTEGER, 'CRLNumber'));
        if (v.length === 0 || (v[0]! & 0x80) !== 0) throw new Asn1Error('CRLNumber: negative or empty');
        crlNumber = BigInt('0x' + v.toString('hex'));
      } else if (ext.oid === OID.authorityKeyIdentifier) {
        const aki = sequenceOf(parseDer(ext.value), 'AuthorityKeyIdentifier');
        const keyId = aki.find((t) => t.tag === 0x80);
        if (keyId !== undefined) authorityKeyId = Buffer.from(value(keyId));
      }
    }
  }
  if (i !== tbs.length) throw new Asn1Error('unexpected fields in tbsCertList');
  return {
    version,
    signatureAlgorithmDer: Buffer.from(outerAlg),
    issuerDer: Buffer.from(raw(issuer)),
    thisUpdate,
    nextUpdate,
    revoked,
    hasRevokedField,
    crlNumber,
    authorityKeyId,
    extensions,
    tbsDer: Buffer.from(raw(tbsTlv)),
    signature: Buffer.from(signature),
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function checkDate(d: unknown, what: string): Date {
  if (!(d instanceof Date) || !Number.isFinite(d.getTime())) throw new TypeError(`${what} must be a valid Date`);
  const y = d.getUTCFullYear();
  if (y < 1950 || y > 9999) throw new RangeError(`${what} is out of the X.509 time range (1950-9999)`);
  return d;
}

/** Unsigned magnitude octets of a hex serial (leading zeros dropped), checked positive and <= 20 octets. */
function serialMagnitude(serial: unknown, what: string): Buffer {
  if (typeof serial !== 'string' || !HEX.test(serial) || serial.length > 2 * MAX_SERIAL_OCTETS + 2) {
    throw new RangeError(`${what}: serial must be a hex string`);
  }
  const bytes = Buffer.from(serial.length % 2 === 1 ? '0' + serial : serial, 'hex');
  let start = 0;
  while (start < bytes.length && bytes[start] === 0) start++;
  const magnitude = bytes.subarray(start);
  if (magnitude.length === 0) throw new RangeError(`${what}: serial must be positive`);
  if (magnitude.length > MAX_SERIAL_OCTETS) throw new RangeError(`${what}: serial is longer than ${MAX_SERIAL_OCTETS} octets`);
  return magnitude;
}

/** Non-negative INTEGER from a bigint. */
function bigintInteger(n: bigint): Buffer {
  let hex = n.toString(16);
  if (hex.length % 2 === 1) hex = '0' + hex;
  return integerFromBuffer(Buffer.from(hex, 'hex'));
}

function readSerial(t: Tlv | undefined): string {
  const v = value(expectTag(t, Tag.INTEGER, 'userCertificate'));
  if (v.length === 0) throw new Asn1Error('userCertificate: empty INTEGER');
  if (v[0]! & 0x80) throw new Asn1Error('userCertificate: negative serial');
  if (v.length > 1 && v[0] === 0 && (v[1]! & 0x80) === 0) throw new Asn1Error('userCertificate: non-minimal INTEGER');
  return (v[0] === 0 && v.length > 1 ? v.subarray(1) : v).toString('hex');
}

function readExtensions(t: Tlv): { oid: string; critical: boolean; value: Buffer }[] {
  return sequenceOf(t, 'Extensions').map((ext) => {
    const parts = sequenceOf(ext, 'Extension');
    let k = 1;
    let critical = false;
    if (parts[1]?.tag === Tag.BOOLEAN) {
      critical = value(parts[1])[0] !== 0;
      k++;
    }
    const v = value(expectTag(parts[k], Tag.OCTET_STRING, 'extnValue'));
    if (parts.length !== k + 1) throw new Asn1Error('Extension has too many elements');
    return { oid: readOid(parts[0], 'extnID'), critical, value: Buffer.from(v) };
  });
}

const TIME_FORMAT = /^(\d{2}|\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;

/** UTCTime (YYMMDDHHMMSSZ, 1950-2049) or GeneralizedTime (YYYYMMDDHHMMSSZ) as RFC 5280 profiles them. */
function readTime(t: Tlv | undefined, what: string): Date {
  if (t === undefined) throw new Asn1Error(`missing ${what}`);
  const text = value(t).toString('latin1');
  const m = TIME_FORMAT.exec(text);
  const utc = t.tag === Tag.UTC_TIME;
  if ((t.tag !== Tag.UTC_TIME && t.tag !== Tag.GENERALIZED_TIME) || m === null || m[1]!.length !== (utc ? 2 : 4)) {
    throw new Asn1Error(`${what}: not an RFC 5280 time`);
  }
  let year = Number(m[1]);
  if (utc) year += year < 50 ? 2000 : 1900;
  const d = new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
  if (d.getUTCFullYear() !== year || d.getUTCMonth() !== Number(m[2]) - 1 || d.getUTCDate() !== Number(m[3]) || d.getUTCSeconds() !== Number(m[6])) {
    throw new Asn1Error(`${what}: invalid date`);
  }
  return d;
}
