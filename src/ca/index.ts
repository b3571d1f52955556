/** Public surface of the certificate authority module. */
import { digest } from './certificate.js';

export { CertificateAuthority, SERVICE_IDENTITY_RENEW_DAYS, SERVICE_IDENTITY_VALIDITY_DAYS } from './authority.js';
export type { CaKeyEvent, CaOptions, ServiceIdentity, ServiceIdentitySpec } from './authority.js';
export { isEncryptedPem } from './key-files.js';
export type { IssuedCertificate } from './certificate.js';
export { CRL_REASON_CODES, crlToDer, crlToPem, readCrl } from './crl.js';
export type { CrlInfo, CrlInput, CrlReason, RevokedCertificate } from './crl.js';
export { parseCsr, MAX_CSR_PEM_LENGTH } from './csr.js';
export type { ParsedCsr } from './csr.js';
export { CaError } from './errors.js';

/** SHA-256 of a SubjectPublicKeyInfo DER, lower-case hex (the store's key fingerprint). */
export function keyFingerprint(spkiDer: Buffer): string {
  return digest('sha256', spkiDer).toString('hex');
}
export { OID as CA_OIDS } from './certificate.js';
