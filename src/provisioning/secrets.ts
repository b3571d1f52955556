/**
 * Service secrets that live in the data directory (claim-code pepper, bootstrap-token key):
 * created once with 32 random bytes, mode 0600, and refused when readable by group or others.
 *
 * With a passphrase (ca.keyPassphrase, the one that protects the CA keys) a secret file holds the
 * value encrypted: `provisiond-secret:v1:<salt>:<iv>:<ciphertext>:<tag>` (base64url parts),
 * AES-256-GCM under scrypt(passphrase, salt; N=2^15, r=8, p=1), the file's name as associated
 * data (a file copied over another does not decrypt). A plaintext file found with a passphrase
 * configured is rewritten encrypted.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, scrypt } from 'node:crypto';
import { link, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errorFamily } from '../errors.js';
import type { Store } from '../store/index.js';

export const SecretError = errorFamily('SecretError', {
  SECRET_PERMISSIONS: { status: 500, description: 'A secret file is readable by group or others.' },
  SECRET_INVALID: { status: 500, description: 'A secret file is damaged.' },
  SECRET_PASSPHRASE_REQUIRED: { status: 500, description: 'A secret file is encrypted and no passphrase is configured (ca.keyPassphrase or ca.keyPassphraseFile).' },
  SECRET_PASSPHRASE_INVALID: { status: 500, description: 'A secret file does not decrypt with the configured passphrase (wrong passphrase, or a damaged file).' },
  SHARED_MATERIAL_MISMATCH: {
    status: 500,
    description: "This instance's CA or service secrets differ from those the store was written with (another instance's, or an earlier copy).",
  },
});

export interface SecretFileOptions {
  /** Encrypts the file at rest (and decrypts an encrypted one). */
  passphrase?: string;
  /** Told when a secret was created ('key.generate') or a plaintext one encrypted in place ('key.encrypt'). */
  onKeyEvent?: (event: { action: 'key.generate' | 'key.encrypt'; name: string; file: string }) => void | Promise<void>;
}

const ENCRYPTED_PREFIX = 'provisiond-secret:v1:';
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 } as const;

function kek(passphrase: string, salt: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(passphrase, salt, 32, SCRYPT, (err, key) => (err ? reject(err) : resolve(key))));
}

/** The text of a secret file for `value`: base64url, or encrypted under the passphrase. */
async function encodeSecret(value: Buffer, name: string, passphrase: string | undefined): Promise<string> {
  if (!passphrase) return value.toString('base64url') + '\n';
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', await kek(passphrase, salt), iv);
  cipher.setAAD(Buffer.from(name, 'utf8'));
  const ct = Buffer.concat([cipher.update(value), cipher.final()]);
  return ENCRYPTED_PREFIX + [salt, iv, ct, cipher.getAuthTag()].map((b) => b.toString('base64url')).join(':') + '\n';
}

async function decodeSecret(text: string, file: string, name: string, passphrase: string | undefined): Promise<{ value: Buffer; encrypted: boolean }> {
  const trimmed = text.trim();
  if (!trimmed.startsWith(ENCRYPTED_PREFIX)) return { value: Buffer.from(trimmed, 'base64url'), encrypted: false };
  if (!passphrase) {
    throw new SecretError('SECRET_PASSPHRASE_REQUIRED', `${file} is encrypted; set ca.keyPassphrase (PROVISIOND_CA__KEY_PASSPHRASE) or ca.keyPassphraseFile to the passphrase it was written with`);
  }
  const parts = trimmed.slice(ENCRYPTED_PREFIX.length).split(':').map((p) => Buffer.from(p, 'base64url'));
  if (parts.length !== 4 || parts[0]!.length !== 16 || parts[1]!.length !== 12 || parts[3]!.length !== 16) {
    throw new SecretError('SECRET_INVALID', `${file} is damaged (not an encrypted secret)`);
  }
  const [salt, iv, ct, tag] = parts as [Buffer, Buffer, Buffer, Buffer];
  try {
    const decipher = createDecipheriv('aes-256-gcm', await kek(passphrase, salt), iv);
    decipher.setAAD(Buffer.from(name, 'utf8'));
    decipher.setAuthTag(tag);
    return { value: Buffer.concat([decipher.update(ct), decipher.final()]), encrypted: true };
  } catch {
    throw new SecretError('SECRET_PASSPHRASE_INVALID', `${file} cannot be decrypted with the configured ca.keyPassphrase (wrong passphrase, or a damaged file)`);
  }
}

/**
 * Writes a new file durably: created exclusively with mode 0600, its data fsynced before the
 * caller links or renames it into place (a power loss must not leave an empty secret while the
 * store already holds data sealed with it).
 */
async function writeDurably(file: string, data: string | Buffer): Promise<void> {
  const handle = await open(file, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsync of a directory, so that a link or rename in it survives a power loss. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function loadOrCreateSecret(dir: string, name: string, opts: SecretFileOptions = {}): Promise<Buffer> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, name);
  const existing = await readSecret(file, name, opts.passphrase);
  if (existing) {
    if (!existing.encrypted && opts.passphrase) {
      // encrypted in place: a new file renamed over the old one (instances sharing the directory
      // may both do it; the value is the same)
      const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
      await writeDurably(tmp, await encodeSecret(existing.value, name, opts.passphrase));
      try {
        await rename(tmp, file);
        await syncDirectory(dir);
      } catch (err) {
        await unlink(tmp).catch(() => undefined);
        throw err;
      }
      await opts.onKeyEvent?.({ action: 'key.encrypt', name, file });
    }
    return existing.value;
  }
  const value = randomBytes(32);
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeDurably(tmp, await encodeSecret(value, name, opts.passphrase));
  try {
    // link, not rename: when several processes share the directory and start at once, the first
    // link wins and the others read its value instead of each keeping their own
    await link(tmp, file);
    await syncDirectory(dir);
    await opts.onKeyEvent?.({ action: 'key.generate', name, file });
    return value;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readSecret(file, name, opts.passphrase))!.value;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** The secret in `file`, or undefined when there is no such file. */
async function readSecret(file: string, name: string, passphrase: string | undefined): Promise<{ value: Buffer; encrypted: boolean } | undefined> {
  try {
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0) {
      throw new SecretError('SECRET_PERMISSIONS', `${file} has mode ${(st.mode & 0o777).toString(8)}; a secret must not be accessible by group or others: run chmod 600 ${file}`);
    }
    const secret = await decodeSecret(await readFile(file, 'utf8'), file, name, passphrase);
    if (secret.value.length < 32) throw new SecretError('SECRET_INVALID', `${file} holds fewer than 32 bytes`);
    return secret;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return undefined;
  }
}

/**
 * Checks that this instance holds the same CA and service secrets as every instance that wrote to
 * the store before (several instances on one Redis; or a data directory restored without its
 * secrets): a claim-code pepper, token key or sealing key that differs would make stored hashes,
 * issued credentials and sealed passphrases useless, and a different CA would split the fleet.
 * The first start records a fingerprint (SHA-256, never the material) per part in the store's
 * meta area; later starts compare and refuse with SHARED_MATERIAL_MISMATCH naming the parts.
 */
export async function checkSharedMaterial(store: Store, parts: Record<string, Buffer | string>, where: string): Promise<void> {
  const differing: string[] = [];
  for (const [name, material] of Object.entries(parts).sort(([a], [b]) => (a < b ? -1 : 1))) {
    const fingerprint = createHash('sha256').update('provisiond shared material v1\0').update(name).update('\0').update(material).digest('hex');
    const key = `material.${name}`;
    // atomic: of several instances starting at once on an empty store, the first one's material counts
    if ((await store.setMetaIfAbsent(key, fingerprint)) !== fingerprint) differing.push(name);
  }
  if (differing.length > 0) {
    throw new SecretError(
      'SHARED_MATERIAL_MISMATCH',
      `this instance's ${differing.join(', ')} differ from what the store was written with: every instance on one store needs the same ${where}/ca and ${where}/secrets (copy them from the first instance; see docs/operations.md, "Several instances")`,
    );
  }
}
