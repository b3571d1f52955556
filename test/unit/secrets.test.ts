import { chmod, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadOrCreateSecret } from '../../src/provisioning/index.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'provisiond-secrets-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('service secrets in the data directory', () => {
  it('creates one secret, 0600, that every concurrent starter gets (no temporary file left)', async () => {
    const values = await Promise.all(Array.from({ length: 12 }, () => loadOrCreateSecret(dir, 'claim-code-pepper')));
    expect(new Set(values.map((v) => v.toString('hex'))).size).toBe(1);
    expect(values[0]!.length).toBe(32);
    expect((await stat(join(dir, 'claim-code-pepper'))).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['claim-code-pepper']);
    expect((await loadOrCreateSecret(dir, 'claim-code-pepper')).equals(values[0]!)).toBe(true);
  });

  it('refuses a secret readable by others, and a damaged one', async () => {
    await loadOrCreateSecret(dir, 'a');
    await chmod(join(dir, 'a'), 0o644);
    await expect(loadOrCreateSecret(dir, 'a')).rejects.toMatchObject({ code: 'SECRET_PERMISSIONS' });
    await writeFile(join(dir, 'b'), 'c2hvcnQ\n', { mode: 0o600 });
    await expect(loadOrCreateSecret(dir, 'b')).rejects.toMatchObject({ code: 'SECRET_INVALID' });
  });
});
