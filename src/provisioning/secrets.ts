/**
 * Service secrets that live in the data directory (claim-code pepper, bootstrap-token key):
 * created once with 32 random bytes, mode 0600, and refused when readable by group or others.
 */
import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorFamily } from '../errors.js';
import type { Store } from '../store/index.js';

export const SecretError = errorFamily('SecretError', {
  SECRET_PERMISSIONS: { status: 500, description: 'A secret file is readable by group or others.' },
  SECRET_INVALID: { status: 500, description: 'A secret file is damaged.' },
  SHARED_MATERIAL_MISMATCH: {
    status: 500,
    description: "This instance's CA or service secrets differ from those the store was written with (another instance's, or an earlier copy).",
  },
});

export async function loadOrCreateSecret(dir: string, name: string): Promise<Buffer> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, name);
  const existing = await readSecret(file);
  if (existing) return existing;
  const value = randomBytes(32);
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, value.toString('base64url') + '\n', { mode: 0o600, flag: 'wx' });
  try {
    // link, not rename: when several processes share the directory and start at once, the first
    // link wins and the others read its value instead of each keeping their own
    await link(tmp, file);
    return value;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return (await readSecret(file))!;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** The secret in `file`, or undefined when there is no such file. */
async function readSecret(file: string): Promise<Buffer | undefined> {
  try {
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0) {
      throw new SecretError('SECRET_PERMISSIONS', `${file} has mode ${(st.mode & 0o777).toString(8)}; run chmod 600 ${file}`);
    }
    const value = Buffer.from((await readFile(file, 'utf8')).trim(), 'base64url');
    if (value.length < 32) throw new SecretError('SECRET_INVALID', `${file} holds fewer than 32 bytes`);
    return value;
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
