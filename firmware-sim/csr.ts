/**
 * A PKCS#10 certificate signing request (RFC 2986) for a device key, built with node:crypto and a
 * few lines of DER (docs/protocol.md §5): no ASN.1 library, no WebCrypto key import.
 *
 *   CertificationRequest ::= SEQUENCE {
 *     certificationRequestInfo SEQUENCE {
 *       version       INTEGER 0,
 *       subject       Name (CN=<deviceId>, UTF8String; ignored by the service),
 *       subjectPKInfo SubjectPublicKeyInfo (the key's own SPKI DER),
 *       attributes    [0] IMPLICIT SET OF Attribute (empty) },
 *     signatureAlgorithm AlgorithmIdentifier (ecdsa-with-SHA256, no parameters),
 *     signature          BIT STRING (DER ECDSA-Sig-Value over certificationRequestInfo) }
 */
import { generateKeyPair, sign, type KeyObject } from 'node:crypto';

/** DER length octets: short form below 128, else long form (0x80 | count, big-endian bytes). */
export function derLength(length: number): Buffer {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid DER length ${length}`);
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One DER TLV: tag, length, content. */
export function der(tag: number, ...content: Uint8Array[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const SEQUENCE = 0x30;
const SET = 0x31;
const INTEGER = 0x02;
const BIT_STRING = 0x03;
const UTF8_STRING = 0x0c;
const CONTEXT_0_CONSTRUCTED = 0xa0;

/** id-at-commonName 2.5.4.3 */
const OID_COMMON_NAME = Buffer.from('0603550403', 'hex');
/** ecdsa-with-SHA256 1.2.840.10045.4.3.2, parameters absent (RFC 5758 §3.2) */
const ECDSA_WITH_SHA256 = der(SEQUENCE, Buffer.from('06082a8648ce3d040302', 'hex'));
const VERSION_0 = der(INTEGER, Buffer.from([0]));
const NO_ATTRIBUTES = der(CONTEXT_0_CONSTRUCTED);

/** DER of a CertificationRequest for `publicKey` with subject CN=`commonName`, signed by `privateKey` (EC). */
export function buildCsrDer(commonName: string, publicKey: KeyObject, privateKey: KeyObject): Buffer {
  const info = certificationRequestInfo(commonName, publicKey);
  // ECDSA signatures from node:crypto are DER ECDSA-Sig-Value unless dsaEncoding says otherwise
  return signedRequest(info, sign('sha256', info, privateKey));
}

/**
 * SubjectPublicKeyInfo of a P-256 key up to the point (RFC 5480): SEQUENCE { SEQUENCE { id-ecPublicKey,
 * prime256v1 }, BIT STRING { 0 unused bits, ... } }; the uncompressed point 04 || x || y follows.
 */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

/**
 * The key's SubjectPublicKeyInfo DER. For P-256 it is assembled from the JWK's coordinates: Node 20's
 * OpenSSL 3 encoder takes ~110 us for export({ type: 'spki' }), the JWK export ~6 us.
 */
export function spkiDer(publicKey: KeyObject): Buffer {
  if (publicKey.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
    const { x, y } = publicKey.export({ format: 'jwk' });
    const xb = Buffer.from(x ?? '', 'base64url');
    const yb = Buffer.from(y ?? '', 'base64url');
    if (xb.length === 32 && yb.length === 32) return Buffer.concat([P256_SPKI_PREFIX, Buffer.from([4]), xb, yb]);
  }
  return publicKey.export({ type: 'spki', format: 'der' });
}

function certificationRequestInfo(commonName: string, publicKey: KeyObject): Buffer {
  const subject = der(SEQUENCE, der(SET, der(SEQUENCE, OID_COMMON_NAME, der(UTF8_STRING, Buffer.from(commonName, 'utf8')))));
  return der(SEQUENCE, VERSION_0, subject, spkiDer(publicKey), NO_ATTRIBUTES);
}

const signedRequest = (info: Buffer, signature: Buffer): Buffer => der(SEQUENCE, info, ECDSA_WITH_SHA256, der(BIT_STRING, Buffer.from([0]), signature));

/** PEM armour, 64 base64 characters a line, with a final newline. */
export function toPem(label: string, derBytes: Uint8Array): string {
  const b64 = Buffer.from(derBytes).toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += `${b64.slice(i, i + 64)}\n`;
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/**
 * A fresh P-256 key pair and a CSR for it. Key generation and the signature run in libuv's thread
 * pool (node:crypto's callback forms), off the event loop, as each real device does its crypto on
 * its own processor; the key comes back as SEC 1 PEM ("EC PRIVATE KEY", what `openssl ecparam
 * -genkey` writes).
 */
export async function makeKeyAndCsrAsync(deviceId: string): Promise<{ privateKey: KeyObject; keyPem: string; csrPem: string }> {
  const { privateKey, publicKey } = await new Promise<{ privateKey: KeyObject; publicKey: KeyObject }>((resolve, reject) =>
    generateKeyPair('ec', { namedCurve: 'P-256' }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ privateKey, publicKey }))),
  );
  const info = certificationRequestInfo(deviceId, publicKey);
  const signature = await new Promise<Buffer>((resolve, reject) => sign('sha256', info, privateKey, (err, sig) => (err ? reject(err) : resolve(sig))));
  return {
    privateKey,
    keyPem: privateKey.export({ type: 'sec1', format: 'pem' }).toString(),
    csrPem: toPem('CERTIFICATE REQUEST', signedRequest(info, signature)),
  };
}
