/**
 * Service secrets that live in the data directory (claim-code pepper, bootstrap-token key):
 * created once with 32 random bytes, mode 0600, and refused when readable by group or others.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { errorFamily } from '../errors.js';

export const SecretError = errorFamily('SecretError', {
  SECRET_PERMISSIONS: { status: 500, description: 'A secret file is readable by group or others.' },
  SECRET_INVALID: { status: 500, description: 'A secret file is damaged.' },
});

export async function loadOrCreateSecret(dir: string, name: string): Promise<Buffer> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, name);
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
  }
  const value = randomBytes(32);
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, value.toString('base64url') + '\n', { mode: 0o600, flag: 'wx' });
  await rename(tmp, file);
  return value;
}
