/** What provisioning needs from other domains, as small interfaces (the CA satisfies Issuer). */
import type { KeyObject } from 'node:crypto';

export interface CsrInfo {
  spkiDer: Buffer;
  publicKey: KeyObject;
  keyFingerprint: string;
}

export interface IssuedCert {
  serial: string;
  pem: string;
  notBefore: Date;
  notAfter: Date;
}

export interface Issuer {
  readonly rootPem: string;
  /** Issuing CA first, root last. */
  readonly chainPems: readonly string[];
  /** Verifies proof of possession; throws a coded CaError. */
  parseCsr(pem: string): CsrInfo;
  issueDevice(req: { deviceId: string; spkiDer: Buffer }): IssuedCert;
  /** A DER X.509 v2 CRL signed by the issuing CA. */
  crl(input: {
    revoked: readonly { serial: string; revokedAt: Date; reason?: 'unspecified' | 'keyCompromise' | 'affiliationChanged' | 'superseded' | 'cessationOfOperation' }[];
    thisUpdate: Date;
    nextUpdate: Date;
    crlNumber: bigint;
  }): Buffer;
}
