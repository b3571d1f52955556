import { errorFamily } from '../errors.js';

/** Errors of the certificate authority (src/ca). */
export const CaError = errorFamily('CaError', {
  CSR_MALFORMED: { status: 400, description: 'The CSR is not a parsable PEM/DER PKCS#10 certification request.' },
  CSR_SIGNATURE_INVALID: { status: 400, description: 'The CSR signature does not verify with its own public key (proof of possession failed).' },
  CSR_KEY_UNSUPPORTED: {
    status: 400,
    description:
      'The CSR key or signature algorithm is not supported (keys: EC P-256, EC P-384, RSA >= 2048 bits; signatures: ECDSA or RSA PKCS#1 v1.5 with SHA-256/384/512).',
  },
  ISSUE_REQUEST_INVALID: {
    status: 400,
    description: 'The identity to certify is invalid (device id, host name, IP address, common name or public key).',
  },
  CA_KEY_PERMISSIONS: { status: 500, description: 'A CA private key file is readable by group or others.' },
  CA_KEY_PASSPHRASE_REQUIRED: { status: 500, description: 'A private key file is encrypted and no passphrase is configured (ca.keyPassphrase or ca.keyPassphraseFile).' },
  CA_KEY_PASSPHRASE_INVALID: { status: 500, description: 'A private key file does not decrypt with the configured passphrase (wrong passphrase, or a damaged file).' },
  CA_MATERIAL_INVALID: {
    status: 500,
    description: 'The CA certificates or keys do not load, do not match, do not chain to the root or are not CA certificates.',
  },
});
export type CaError = InstanceType<typeof CaError>;
