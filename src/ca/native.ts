/**
 * The optional native part of the CA (native/p256.c, built by node-gyp at `npm ci` into
 * build/Release/provisiond_native.node): ECDSA P-256 / SHA-256 verification without building an
 * EVP_PKEY per device key, which under OpenSSL 3.0 costs as much as the verification itself.
 * When the module is missing (no compiler where it was installed) the CA uses node:crypto for
 * everything, with the same results (test/unit/ca-native.test.ts compares both on random input).
 * PROVISIOND_NATIVE=0 turns it off.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** An EC_KEY held by the native module (released when the handle is garbage-collected). */
export type NativeSigner = { readonly __nativeSigner: unique symbol };

export interface NativeCrypto {
  /** true / false, or -1 when `point` is not a valid uncompressed or compressed P-256 point. */
  verifyP256(point: Buffer, data: Buffer, signature: Buffer): boolean | -1;
  /** A signer for the P-256 private scalar `d` (32 bytes); throws when it is not a valid key. */
  p256Signer(d: Buffer): NativeSigner;
  /** ECDSA with SHA-256 over `data`, DER-encoded. */
  signP256(signer: NativeSigner, data: Buffer): Buffer;
}

function load(): NativeCrypto | undefined {
  if (process.env.PROVISIOND_NATIVE === '0') return undefined;
  // src/ca/native.ts and dist/src/ca/native.js: the package root is two or three levels up
  const here = dirname(fileURLToPath(import.meta.url));
  for (const root of [join(here, '../..'), join(here, '../../..')]) {
    const file = join(root, 'build', 'Release', 'provisiond_native.node');
    if (!existsSync(file)) continue;
    try {
      return createRequire(import.meta.url)(file) as NativeCrypto;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

export const native: NativeCrypto | undefined = load();
