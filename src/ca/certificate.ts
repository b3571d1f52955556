/**
 * RFC 5280 certificate construction. Everything constant for a given issuer (issuer Name,
 * signature AlgorithmIdentifier, AKI, basicConstraints, keyUsage and EKU extensions, the
 * organisation RDN) is encoded once in `CertificateIssuer`'s constructor; issuing a certificate
 * concatenates those Buffers with the few per-certificate parts and signs the result.
 */
import crypto, { type KeyObject } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import {
  Asn1Error,
  NULL,
  Tag,
  bitString,
  boolean,
  children,
  expectTag,
  explicit,
  implicit,
  integer,
  namedBits,
  octetString,
  oid,
  parseDer,
  pemEncode,
  raw,
  readBitStringBytes,
  readOid,
  sequence,
  sequenceOf,
  set,
  time,
  tlv,
  truncateToSecond,
  utf8String,
  value,
  type Tlv,
} from './asn1.js';
import { CaError } from './errors.js';
import { native } from './native.js';

/** A certificate just issued. */
export interface IssuedCertificate {
  /** Lower-case hex of the serial INTEGER content octets (as X509Certificate.serialNumber, lower-cased). */
  serial: string;
  der: Buffer;
  pem: string;
  notBefore: Date;
  notAfter: Date;
}

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

export const OID = {
  commonName: '2.5.4.3',
  organizationName: '2.5.4.10',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  /**
   * provisiond config signing (EKU). A UUID OID (ITU-T X.667 arc 2.25, UUID
   * c0549179-282a-4c59-b038-df67ba61c96a): devices accept a config document only from a
   * certificate carrying it, so no device certificate can pass as the signer.
   */
  configSigning: '2.25.255650878675251502668112521049223055722',
  ecPublicKey: '1.2.840.10045.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
} as const;

/** keyUsage bit numbers (RFC 5280 4.2.1.3). */
export const KeyUsage = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

const VERSION_V3 = explicit(0, integer(2));
const OID_EC_PUBLIC_KEY_DER = oid(OID.ecPublicKey);
const OID_RSA_ENCRYPTION_DER = oid(OID.rsaEncryption);
const CN_OID_DER = oid(OID.commonName);
const SAN_OID_DER = oid(OID.subjectAltName);
const SKI_OID_DER = oid(OID.subjectKeyIdentifier);

const DEVICE_URI_BYTES = Buffer.from('urn:provisiond:device:', 'latin1');
const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

/** One Extension: SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }. */
export function extension(extnId: string, critical: boolean, valueDer: Buffer): Buffer {
  return critical ? sequence(oid(extnId), boolean(true), octetString(valueDer)) : sequence(oid(extnId), octetString(valueDer));
}

/** basicConstraints value; CA:FALSE is the empty SEQUENCE (DEFAULT values are omitted in DER). */
export function basicConstraints(ca: boolean, pathLen?: number): Buffer {
  const parts: Buffer[] = [];
  if (ca) parts.push(boolean(true));
  if (ca && pathLen !== undefined) parts.push(integer(pathLen));
  return sequence(...parts);
}

/** extKeyUsage value from purpose OIDs. */
export function extKeyUsage(purposes: readonly string[]): Buffer {
  return sequence(...purposes.map(oid));
}

/** authorityKeyIdentifier value with only [0] keyIdentifier. */
export function authorityKeyIdentifier(keyId: Buffer): Buffer {
  return sequence(implicit(0, keyId));
}

/** Name from (attribute OID, encoded value) pairs, most significant first, one attribute per RDN. */
export function name(attributes: ReadonlyArray<readonly [string, Buffer]>): Buffer {
  return sequence(...attributes.map(([type, v]) => set(sequence(oid(type), v))));
}

/** Name "O=<organization>, CN=<commonName>" (UTF8String values), in that DER order. */
export function orgName(organization: string, commonName: string): Buffer {
  return name([
    [OID.organizationName, utf8String(organization)],
    [OID.commonName, utf8String(commonName)],
  ]);
}

/** GeneralName dNSName. */
export function dnsName(host: string): Buffer {
  return tlv(0x82, Buffer.from(host, 'latin1'));
}

/** GeneralName uniformResourceIdentifier. */
export function uriName(uri: string): Buffer {
  return tlv(0x86, Buffer.from(uri, 'latin1'));
}

/** GeneralName iPAddress (4 or 16 octets). */
export function ipName(bytes: Buffer): Buffer {
  return tlv(0x87, bytes);
}

/** Octets of an IPv4 (4) or IPv6 (16) textual address; throws Asn1Error when it is neither. */
export function ipBytes(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  if (!isIPv6(address)) throw new Asn1Error(`not an IP address: ${address}`);
  let text = address.split('%')[0]!;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(2).map(Number) as [number, number, number, number];
    text = `${v4[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((h) => parseInt(h, 16)));
  const halves = text.split('::');
  let groups = parse(halves[0]!);
  if (halves.length === 2) {
    const rest = parse(halves[1]!);
    groups = [...groups, ...new Array<number>(8 - groups.length - rest.length).fill(0), ...rest];
  }
  if (groups.length !== 8 || groups.some((g) => !(g >= 0 && g <= 0xffff))) throw new Asn1Error(`not an IP address: ${address}`);
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** Key identifier per RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING contents. */
export function keyIdentifier(spkiDer: Buffer): Buffer {
  return digest('sha1', inspectSpki(spkiDer).keyBits);
}

/** Key algorithm and subjectPublicKey bits of a SubjectPublicKeyInfo (strict DER). */
export function inspectSpki(spkiDer: Buffer): { algorithm: 'ec' | 'rsa' | 'other'; keyBits: Buffer } {
  const parts = sequenceOf(parseDer(spkiDer), 'SubjectPublicKeyInfo');
  if (parts.length !== 2) throw new Asn1Error('SubjectPublicKeyInfo must have 2 elements');
  const algParts = sequenceOf(parts[0], 'AlgorithmIdentifier');
  const algOid = raw(expectTag(algParts[0], Tag.OID, 'algorithm'));
  const algorithm = algOid.equals(OID_EC_PUBLIC_KEY_DER) ? 'ec' : algOid.equals(OID_RSA_ENCRYPTION_DER) ? 'rsa' : 'other';
  return { algorithm, keyBits: readBitStringBytes(parts[1], 'subjectPublicKey') };
}

// ---------------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------------

/** How an issuer key signs: algorithm identifier DER plus crypto.sign arguments. */
export interface Signer {
  readonly key: KeyObject;
  readonly algorithmDer: Buffer;
  readonly hash: string | null;
  /** P-256 keys with the native module: signs without a trip through EVP (src/ca/native.ts). */
  readonly sign?: (tbs: Buffer) => Buffer;
}

/** Signs with the signer's key and algorithm: DER signature bytes. */
export function signWith(signer: Signer, data: Buffer): Buffer {
  return signer.sign ? signer.sign(data) : crypto.sign(signer.hash, data, { key: signer.key, dsaEncoding: 'der' });
}

/** The native signer for a P-256 key, when the native module is there. */
function nativeP256(key: KeyObject): ((tbs: Buffer) => Buffer) | undefined {
  if (native === undefined) return undefined;
  const d = key.export({ format: 'jwk' }).d;
  if (d === undefined) return undefined;
  const handle = native.p256Signer(Buffer.from(d, 'base64url'));
  return (tbs) => native!.signP256(handle, tbs);
}

/**
 * Signature algorithm for a CA private key: ECDSA with SHA-256/384/512 for P-256/P-384/P-521,
 * sha256WithRSAEncryption for RSA, Ed25519. Throws CA_MATERIAL_INVALID for anything else.
 */
export function signerFor(key: KeyObject): Signer {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const byCurve: Record<string, [string, string]> = {
      prime256v1: ['1.2.840.10045.4.3.2', 'sha256'],
      secp384r1: ['1.2.840.10045.4.3.3', 'sha384'],
      secp521r1: ['1.2.840.10045.4.3.4', 'sha512'],
    };
    const entry = curve === undefined ? undefined : byCurve[curve];
    if (entry === undefined) throw new CaError('CA_MATERIAL_INVALID', `unsupported CA key curve ${curve ?? '?'}`);
    const fast = curve === 'prime256v1' && key.type === 'private' ? nativeP256(key) : undefined;
    return { key, algorithmDer: sequence(oid(entry[0])), hash: entry[1], ...(fast ? { sign: fast } : {}) };
  }
  if (type === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) throw new CaError('CA_MATERIAL_INVALID', `CA RSA key too small (${bits} bits)`);
    return { key, algorithmDer: sequence(oid('1.2.840.113549.1.1.11'), NULL), hash: 'sha256' };
  }
  if (type === 'ed25519') return { key, algorithmDer: sequence(oid('1.3.101.112')), hash: null };
  throw new CaError('CA_MATERIAL_INVALID', `unsupported CA key type ${type ?? '?'}`);
}

/** Everything that varies per certificate, already DER-encoded where it matters. */
export interface CertificateParts {
  /** Encoded INTEGER. */
  serialDer: Buffer;
  issuerDer: Buffer;
  notBefore: Date;
  notAfter: Date;
  subjectDer: Buffer;
  spkiDer: Buffer;
  /** Encoded Extension elements. */
  extensions: readonly Buffer[];
}

/** Assembles TBSCertificate from parts and signs it; returns the Certificate DER. */
export function buildCertificate(parts: CertificateParts, signer: Signer): Buffer {
  const tbs = sequence(
    VERSION_V3,
    parts.serialDer,
    signer.algorithmDer,
    parts.issuerDer,
    encodeValidity(parts.notBefore, parts.notAfter),
    parts.subjectDer,
    parts.spkiDer,
    explicit(3, tlv(Tag.SEQUENCE, parts.extensions)),
  );
  return sequence(tbs, signer.algorithmDer, bitString(signWith(signer, tbs)));
}

let lastValidity: { from: number; to: number; der: Buffer } | undefined;

/** Validity SEQUENCE; the last encoding is reused (many certificates are issued per second). */
function encodeValidity(notBefore: Date, notAfter: Date): Buffer {
  const from = notBefore.getTime();
  const to = notAfter.getTime();
  if (lastValidity !== undefined && lastValidity.from === from && lastValidity.to === to) return lastValidity.der;
  const der = sequence(time(notBefore), time(notAfter));
  lastValidity = { from, to, der };
  return der;
}

/** SHA-1 / SHA-256 one-shot (crypto.hash from Node 20.12, createHash before). */
export function digest(algorithm: 'sha1' | 'sha256', data: Buffer): Buffer {
  return typeof crypto.hash === 'function' ? crypto.hash(algorithm, data, 'buffer') : crypto.createHash(algorithm).update(data).digest();
}

const SERIAL_POOL_SIZE = 16 * 512;
let serialPool = Buffer.alloc(0);
let serialOffset = 0;

/** 16 random octets, top bit clear and first octet non-zero: a positive 16-octet INTEGER. */
export function randomSerial(): { der: Buffer; hex: string } {
  for (;;) {
    if (serialOffset + 16 > serialPool.length) {
      serialPool = crypto.randomBytes(SERIAL_POOL_SIZE);
      serialOffset = 0;
    }
    const bytes = Buffer.from(serialPool.subarray(serialOffset, serialOffset + 16));
    serialPool.fill(0, serialOffset, serialOffset + 16);
    serialOffset += 16;
    bytes[0] = bytes[0]! & 0x7f;
    if (bytes[0] === 0) continue;
    return { der: tlv(Tag.INTEGER, bytes), hex: bytes.toString('hex') };
  }
}

// ---------------------------------------------------------------------------------------------
// The issuer with precomputed parts
// ---------------------------------------------------------------------------------------------

/** What a CertificateIssuer needs to know about its CA. */
export interface IssuerMaterial {
  /** The CA's subject Name, exactly as encoded in its certificate. */
  subjectDer: Buffer;
  /** The CA's subject key identifier (from its SKI extension, else computed). */
  keyId: Buffer;
  /** Certificates are never valid beyond this instant (the CA's own notAfter). */
  notAfter: Date;
  signer: Signer;
}

/** Validity window with X.509 (whole second) precision, clamped to the issuer's notAfter. */
export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** Issues end-entity certificates under one CA with every constant DER part precomputed. */
export class CertificateIssuer {
  private readonly issuerDer: Buffer;
  private readonly organizationRdn: Buffer;
  private readonly akiExt: Buffer;
  private readonly endEntityBc: Buffer;
  private readonly kuSign: Buffer;
  private readonly kuSignEncipher: Buffer;
  private readonly kuSignAgree: Buffer;
  private readonly ekuConfigSigning: Buffer;
  private readonly ekuClient: Buffer;
  private readonly ekuServer: Buffer;

  constructor(
    private readonly ca: IssuerMaterial,
    organization: string,
  ) {
    this.issuerDer = Buffer.from(ca.subjectDer);
    this.organizationRdn = set(sequence(oid(OID.organizationName), utf8String(organization)));
    this.akiExt = extension(OID.authorityKeyIdentifier, false, authorityKeyIdentifier(ca.keyId));
    this.endEntityBc = extension(OID.basicConstraints, true, basicConstraints(false));
    this.kuSign = extension(OID.keyUsage, true, namedBits([KeyUsage.digitalSignature]));
    this.kuSignEncipher = extension(OID.keyUsage, true, namedBits([KeyUsage.digitalSignature, KeyUsage.keyEncipherment]));
    this.kuSignAgree = extension(OID.keyUsage, true, namedBits([KeyUsage.digitalSignature, KeyUsage.keyAgreement]));
    this.ekuConfigSigning = extension(OID.extKeyUsage, false, extKeyUsage([OID.configSigning]));
    this.ekuClient = extension(OID.extKeyUsage, false, extKeyUsage([OID.clientAuth]));
    this.ekuServer = extension(OID.extKeyUsage, false, extKeyUsage([OID.serverAuth]));
  }

  /** The issuer's notAfter, the latest notAfter it can give. */
  get caNotAfter(): Date {
    return this.ca.notAfter;
  }

  /** Validity window starting 5 minutes before `now` (clock skew) and lasting `days`. */
  validity(now: Date, days: number): Validity {
    const notBefore = truncateToSecond(new Date(now.getTime() - 5 * 60_000));
    let notAfter = truncateToSecond(new Date(now.getTime() + days * 86_400_000));
    if (notAfter.getTime() > this.ca.notAfter.getTime()) notAfter = truncateToSecond(this.ca.notAfter);
    if (notAfter.getTime() <= now.getTime()) throw new CaError('CA_MATERIAL_INVALID', 'the issuing CA (or its chain) has expired');
    return { notBefore, notAfter };
  }

  /**
   * Device client certificate: subject O=<organization>, CN=<deviceId>; SAN URI
   * urn:provisiond:device:<deviceId>; EKU clientAuth. This is the hot path.
   */
  device(deviceId: string, spkiDer: Buffer, validity: Validity): IssuedCertificate {
    if (typeof deviceId !== 'string' || !DEVICE_ID.test(deviceId)) {
      throw new CaError('ISSUE_REQUEST_INVALID', 'device id must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$');
    }
    const key = this.inspect(spkiDer);
    const idBytes = Buffer.from(deviceId, 'latin1');
    const subject = tlv(Tag.SEQUENCE, [this.organizationRdn, set(sequence(CN_OID_DER, tlv(Tag.UTF8_STRING, idBytes)))]);
    const san = sequence(SAN_OID_DER, octetString(sequence(tlv(0x86, [DEVICE_URI_BYTES, idBytes]))));
    return this.issue(subject, spkiDer, validity, [
      this.endEntityBc,
      // the device key also decrypts secrets sent to it: key agreement (ECDH-ES) or encipherment (RSA-OAEP)
      key.algorithm === 'rsa' ? this.kuSignEncipher : this.kuSignAgree,
      this.ekuClient,
      skiExtension(key.keyBits),
      this.akiExt,
      san,
    ]);
  }

  /** TLS server certificate: CN = first host name (or first IP), SAN DNS + IP, EKU serverAuth. */
  server(hostnames: readonly string[], ipAddresses: readonly string[], spkiDer: Buffer, validity: Validity): IssuedCertificate {
    const key = this.inspect(spkiDer);
    const names: Buffer[] = [];
    for (const host of hostnames) {
      if (typeof host !== 'string' || !isHostname(host)) throw new CaError('ISSUE_REQUEST_INVALID', `invalid host name: ${String(host)}`);
      names.push(dnsName(host.toLowerCase()));
    }
    for (const ip of ipAddresses) {
      let bytes: Buffer;
      try {
        bytes = ipBytes(ip);
      } catch {
        throw new CaError('ISSUE_REQUEST_INVALID', `invalid IP address: ${String(ip)}`);
      }
      names.push(ipName(bytes));
    }
    const cn = hostnames[0]?.toLowerCase() ?? ipAddresses[0];
    if (cn === undefined) throw new CaError('ISSUE_REQUEST_INVALID', 'a server certificate needs at least one host name or IP address');
    return this.issue(name([[OID.commonName, utf8String(cn)]]), spkiDer, validity, [
      this.endEntityBc,
      key.algorithm === 'rsa' ? this.kuSignEncipher : this.kuSign,
      this.ekuServer,
      skiExtension(key.keyBits),
      this.akiExt,
      extension(OID.subjectAltName, false, sequence(...names)),
    ]);
  }

  /** Config signing certificate: CN = commonName, keyUsage digitalSignature, EKU provisiond config signing. */
  signer(commonName: string, spkiDer: Buffer, validity: Validity): IssuedCertificate {
    if (typeof commonName !== 'string' || commonName.length === 0 || commonName.length > 64 || /[\u0000-\u001f\u007f]/.test(commonName)) {
      throw new CaError('ISSUE_REQUEST_INVALID', 'common name must be 1-64 printable characters');
    }
    const key = this.inspect(spkiDer);
    return this.issue(
      tlv(Tag.SEQUENCE, [this.organizationRdn, set(sequence(CN_OID_DER, utf8String(commonName)))]),
      spkiDer,
      validity,
      [this.endEntityBc, this.kuSign, this.ekuConfigSigning, skiExtension(key.keyBits), this.akiExt],
    );
  }

  private inspect(spkiDer: Buffer): { algorithm: 'ec' | 'rsa'; keyBits: Buffer } {
    let info: ReturnType<typeof inspectSpki>;
    try {
      if (!Buffer.isBuffer(spkiDer)) throw new Asn1Error('spkiDer must be a Buffer');
      info = inspectSpki(spkiDer);
    } catch (err) {
      throw new CaError('ISSUE_REQUEST_INVALID', 'the public key is not a valid SubjectPublicKeyInfo', { cause: err });
    }
    if (info.algorithm === 'other') throw new CaError('ISSUE_REQUEST_INVALID', 'only EC and RSA public keys can be certified');
    return info as { algorithm: 'ec' | 'rsa'; keyBits: Buffer };
  }

  private issue(subjectDer: Buffer, spkiDer: Buffer, validity: Validity, extensions: Buffer[]): IssuedCertificate {
    const serial = randomSerial();
    const der = buildCertificate(
      { serialDer: serial.der, issuerDer: this.issuerDer, notBefore: validity.notBefore, notAfter: validity.notAfter, subjectDer, spkiDer, extensions },
      this.ca.signer,
    );
    return { serial: serial.hex, der, pem: pemEncode('CERTIFICATE', der), notBefore: validity.notBefore, notAfter: validity.notAfter };
  }
}

/** Non-critical subjectKeyIdentifier extension for the given subjectPublicKey bits. */
function skiExtension(keyBits: Buffer): Buffer {
  const id = digest('sha1', keyBits);
  return sequence(SKI_OID_DER, octetString(octetString(id)));
}

/** DNS host name (ASCII / punycode), optionally with a leading '*.' wildcard label. */
export function isHostname(host: string): boolean {
  if (host.length === 0 || host.length > 253) return false;
  const labels = (host.startsWith('*.') ? host.slice(2) : host).split('.');
  return labels.every((l) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l) || /^[A-Za-z0-9_]$/.test(l));
}

// ---------------------------------------------------------------------------------------------
// Reading certificates (not on the hot path)
// ---------------------------------------------------------------------------------------------

/** The parts of a certificate the CA needs to reuse or compare. */
export interface CertificateInfo {
  /** Issuer Name DER, exactly as encoded. */
  issuerDer: Buffer;
  /** Subject Name DER, exactly as encoded. */
  subjectDer: Buffer;
  spkiDer: Buffer;
  /** Extensions by OID: criticality and extnValue contents. */
  extensions: Map<string, { critical: boolean; value: Buffer }>;
}

/** Splits a Certificate DER into the fields the CA uses (strict DER; throws Asn1Error). */
export function readCertificate(der: Buffer): CertificateInfo {
  const cert = sequenceOf(parseDer(der), 'Certificate');
  if (cert.length !== 3) throw new Asn1Error('Certificate must have 3 elements');
  const tbs = sequenceOf(cert[0], 'TBSCertificate');
  let i = 0;
  if (tbs[0]?.tag === 0xa0) i++;
  const field = (k: number) => tbs[i + k];
  expectTag(field(0), Tag.INTEGER, 'serialNumber');
  expectTag(field(1), Tag.SEQUENCE, 'signature');
  const issuer = expectTag(field(2), Tag.SEQUENCE, 'issuer');
  expectTag(field(3), Tag.SEQUENCE, 'validity');
  const subject = expectTag(field(4), Tag.SEQUENCE, 'subject');
  const spki = expectTag(field(5), Tag.SEQUENCE, 'subjectPublicKeyInfo');
  const extensions = new Map<string, { critical: boolean; value: Buffer }>();
  for (const t of tbs.slice(i + 6)) {
    if (t.tag !== 0xa3) continue;
    for (const ext of sequenceOf(children(t)[0], 'Extensions')) {
      const parts = sequenceOf(ext, 'Extension');
      const id = readOid(parts[0], 'extnID');
      let critical = false;
      let valueTlv: Tlv | undefined = parts[1];
      if (valueTlv?.tag === Tag.BOOLEAN) {
        critical = value(valueTlv)[0] !== 0;
        valueTlv = parts[2];
      }
      extensions.set(id, { critical, value: Buffer.from(value(expectTag(valueTlv, Tag.OCTET_STRING, 'extnValue'))) });
    }
  }
  return {
    issuerDer: Buffer.from(raw(issuer)),
    subjectDer: Buffer.from(raw(subject)),
    spkiDer: Buffer.from(raw(spki)),
    extensions,
  };
}

/** keyIdentifier from a subjectKeyIdentifier extension value. */
export function readSubjectKeyIdentifier(extValue: Buffer): Buffer {
  return Buffer.from(value(expectTag(parseDer(extValue), Tag.OCTET_STRING, 'SubjectKeyIdentifier')));
}

/** Set of keyUsage bit numbers from a keyUsage extension value. */
export function readKeyUsage(extValue: Buffer): Set<number> {
  const v = value(expectTag(parseDer(extValue), Tag.BIT_STRING, 'KeyUsage'));
  const bits = new Set<number>();
  for (let byte = 1; byte < v.length; byte++) {
    for (let bit = 0; bit < 8; bit++) if (v[byte]! & (0x80 >> bit)) bits.add((byte - 1) * 8 + bit);
  }
  return bits;
}

/** dNSName (lower-cased) and iPAddress (hex) entries of a subjectAltName extension value, as 'dns:..'/'ip:..' strings. */
export function readSubjectAltNames(extValue: Buffer): string[] {
  const out: string[] = [];
  for (const gn of sequenceOf(parseDer(extValue), 'GeneralNames')) {
    if (gn.tag === 0x82) out.push('dns:' + value(gn).toString('latin1').toLowerCase());
    else if (gn.tag === 0x87) out.push('ip:' + value(gn).toString('hex'));
    else if (gn.tag === 0x86) out.push('uri:' + value(gn).toString('latin1'));
  }
  return out;
}

/** CA helpers used by the authority when it creates its own root and issuing CA. */
export const caExtensions = {
  basicConstraints: (pathLen?: number) => extension(OID.basicConstraints, true, basicConstraints(true, pathLen)),
  keyUsage: (bits: readonly number[]) => extension(OID.keyUsage, true, namedBits(bits)),
  subjectKeyIdentifier: (keyId: Buffer) => extension(OID.subjectKeyIdentifier, false, octetString(keyId)),
  authorityKeyIdentifier: (keyId: Buffer) => extension(OID.authorityKeyIdentifier, false, authorityKeyIdentifier(keyId)),
};
