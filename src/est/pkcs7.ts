/**
 * The one PKCS#7 / CMS structure EST needs: a degenerate SignedData "certs-only" (RFC 5652 §5,
 * RFC 7030 §4.1.3 and §4.2.3, the "Simple PKI Response" of RFC 5272): certificates and nothing
 * signed. Built with the CA's DER encoder; no CMS library.
 *
 *   ContentInfo ::= SEQUENCE { contentType id-signedData, content [0] EXPLICIT SignedData }
 *   SignedData  ::= SEQUENCE {
 *     version          INTEGER 1,
 *     digestAlgorithms SET {} ,
 *     encapContentInfo SEQUENCE { eContentType id-data }   -- no eContent
 *     certificates     [0] IMPLICIT SET OF Certificate,
 *     signerInfos      SET {} }
 */
import { Asn1Error, Tag, explicit, implicit, integer, oid, parseDer, pemBlocks, sequence, set } from '../ca/asn1.js';

const ID_SIGNED_DATA = '1.2.840.113549.1.7.2';
const ID_DATA = '1.2.840.113549.1.7.1';

/** DER of a degenerate certs-only SignedData (in its ContentInfo) holding `certsDer`, in order. */
export function certsOnlyDer(certsDer: readonly Buffer[]): Buffer {
  if (certsDer.length === 0) throw new Asn1Error('a certs-only message needs at least one certificate');
  for (const der of certsDer) {
    const t = parseDer(der);
    if (t.tag !== Tag.SEQUENCE) throw new Asn1Error('a certificate must be a DER SEQUENCE');
  }
  const signedData = sequence(
    integer(1),
    set(),
    sequence(oid(ID_DATA)),
    // certificates [0] IMPLICIT CertificateSet: the SET tag replaced by a constructed [0].
    // Order is kept as given (OpenSSL and every EST client read a BER/DER SET of certificates
    // in stored order; the chain order is the useful one).
    implicit(0, Buffer.concat(certsDer), true),
    set(),
  );
  return sequence(oid(ID_SIGNED_DATA), explicit(0, signedData));
}

/** The same for PEM input: every CERTIFICATE block of every text, in order. */
export function certsOnlyFromPems(pems: readonly string[]): Buffer {
  const ders: Buffer[] = [];
  for (const text of pems) {
    for (const block of pemBlocks(text)) {
      if (block.label === 'CERTIFICATE') ders.push(block.der);
    }
  }
  return certsOnlyDer(ders);
}

/** Base64 in 64-character lines (CRLF-free; RFC 2045 allows up to 76), trailing newline. */
export function base64Lines(der: Buffer): string {
  const b64 = der.toString('base64');
  let out = '';
  for (let i = 0; i < b64.length; i += 64) out += b64.slice(i, i + 64) + '\n';
  return out;
}
