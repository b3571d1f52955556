/**
 * `provisiond store copy` on real parts: a SQLite store written by the real service (devices
 * provisioned over MQTT/TLS, a renewed and a revoked certificate, a second tenant, two profile
 * versions), copied by the real CLI (a child process) into a real redis-server and back into a
 * fresh SQLite file; the two SQLite stores export identical entries, and the service runs on the
 * Redis copy. Copying into a non-empty target fails and changes nothing.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import { RedisStore, SqliteStore, type Store } from '../../src/store/index.js';
import { COUNT_KINDS, formatCounts } from '../../src/store/copy.js';
import type { StoreCounts, StoreEntry } from '../../src/store/types.js';
import { register, registerAndClaim } from '../helpers/device.js';
import { startRedisCluster, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { startTestService } from '../helpers/service.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs src/cli/main.ts with `args` (through tsx, as `npm run demo` does). */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_NO_WARNINGS: '1', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

async function withStore<T>(store: Store, fn: (s: Store) => Promise<T>): Promise<T> {
  await store.start();
  try {
    return await fn(store);
  } finally {
    await store.stop();
  }
}

const exportAll = (store: Store) =>
  withStore(store, async (s) => {
    const out: StoreEntry[] = [];
    for await (const entry of s.exportEntries()) out.push(entry);
    return out;
  });

const countsOf = (store: Store) => withStore(store, (s) => s.countEntries());

/** The counts and digest of a successful run's summary line. */
function summary(run: Run): { counts: StoreCounts; digest: string } {
  const m = /^copied ((?:\w+=\d+ ?)+); counts match; digest (sha256:[0-9a-f]{64})\n$/.exec(run.stdout);
  if (m === null) throw new Error(`unexpected stdout: ${JSON.stringify(run.stdout)} (stderr: ${run.stderr})`);
  const counts = Object.fromEntries(m[1]!.trim().split(' ').map((kv) => [kv.split('=')[0]!, Number(kv.split('=')[1])])) as unknown as StoreCounts;
  expect(Object.keys(counts)).toStrictEqual([...COUNT_KINDS]);
  return { counts, digest: m[2]! };
}

let dir: string;
let dataDir: string;
let sourceDb: string;
let redis: RedisServer;
const prefix = `copy${Date.now()}:`;
let deviceIds: { provisioned: string; renewed: string; revoked: string; registered: string };
let adminKey: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'provisiond-store-copy-'));
  dataDir = join(dir, 'data');
  sourceDb = join(dataDir, 'provisiond.db');
  redis = await startRedisServer();

  const ts = await startTestService({}, { dataDir });
  try {
    adminKey = ts.keys.admin;
    const auth = { authorization: `Bearer ${ts.keys.admin}` };
    await ts.tenant('acme');
    const profile = { name: 'thermostats', deadlineSeconds: 600, items: [{ id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} }] };
    for (const name of ['thermostats', 'thermostats v2']) {
      const res = await ts.running.api.inject({ method: 'PUT', url: '/v1/profiles/thermo', headers: auth, payload: { ...profile, name } });
      expect(res.statusCode).toBe(200);
    }
    const claims = await Promise.all([0, 1, 2].map(() => registerAndClaim(ts)));
    const sims = claims.map((c) => new SimDevice({ deviceId: c.id, model: 'thermostat', bootstrap: c.bootstrap }));
    try {
      await Promise.all(sims.map((d) => d.run()));
      await sims[1]!.renew();
    } finally {
      await Promise.all(sims.map((d) => d.stop()));
    }
    const revoke = await ts.running.api.inject({ method: 'POST', url: `/v1/devices/${claims[2]!.id}/revoke`, headers: auth });
    expect(revoke.statusCode).toBe(200);
    const { id: registered } = await register(ts);
    deviceIds = { provisioned: claims[0]!.id, renewed: claims[1]!.id, revoked: claims[2]!.id, registered };
  } finally {
    await ts.stop();
  }
}, 60_000);

afterAll(async () => {
  await redis?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('provisiond store copy', () => {
  it('copies SQLite -> Redis -> a fresh SQLite file with the same counts and digest; the copies are identical', async () => {
    const source = new SqliteStore({ file: sourceDb });
    const expected = await countsOf(source);
    expect(expected).toMatchObject({ tenants: 2, devices: 4, certificates: 4, bootstrapTokens: 3 });

    const there = await cli(['store', 'copy', '--from', `sqlite:${sourceDb}`, '--to', redis.url, '--to-prefix', prefix, '--batch', '2']);
    expect(there.code, there.stderr).toBe(0);
    const first = summary(there);
    expect(first.counts).toStrictEqual(expected);
    expect(there.stdout).toBe(`copied ${formatCounts(expected)}; counts match; digest ${first.digest}\n`);
    expect(there.stderr).toContain(`store copy: sqlite:${sourceDb} -> ${redis.url} (prefix ${prefix})`);
    expect(there.stderr).toMatch(/store copy: 4\/4 devices, tenants=2 /);

    const copyDb = join(dir, 'back', 'provisiond.db');
    const back = await cli(['store', 'copy', '--from', redis.url, '--from-prefix', prefix, '--to', `sqlite:${copyDb}`]);
    expect(back.code, back.stderr).toBe(0);
    expect(summary(back)).toStrictEqual(first);

    const original = await exportAll(new SqliteStore({ file: sourceDb }));
    expect(await exportAll(new SqliteStore({ file: copyDb }))).toStrictEqual(original);
    expect(await exportAll(new RedisStore({ url: redis.url, prefix }))).toStrictEqual(original);

    // what the copy carries: the renewal, the revocation, every profile version
    const certs = (entries: StoreEntry[], id: string) =>
      entries.flatMap((e) => (e.kind === 'device' && e.device.id === id ? e.certificates.map((c) => c.status) : []));
    // the renewed-away certificate is revoked (reason superseded) once the new one is in use
    expect(certs(original, deviceIds.renewed)).toStrictEqual(['revoked', 'active']);
    expect(certs(original, deviceIds.revoked)).toStrictEqual(['revoked']);
    expect(original.flatMap((e) => (e.kind === 'profileVersion' && e.profile.id === 'thermo' ? [e.profile.name] : []))).toStrictEqual([
      'thermostats',
      'thermostats v2',
    ]);
  });

  it('the service runs on the Redis copy with the original CA and secrets', async () => {
    const copyData = join(dir, 'redis-instance');
    await cp(join(dataDir, 'ca'), join(copyData, 'ca'), { recursive: true });
    await cp(join(dataDir, 'secrets'), join(copyData, 'secrets'), { recursive: true });
    const ts = await startTestService({ store: { kind: 'redis', redisUrl: redis.url, redisPrefix: prefix } }, { dataDir: copyData });
    try {
      const get = (id: string) => ts.running.api.inject({ url: `/v1/devices/${id}`, headers: { authorization: `Bearer ${adminKey}` } });
      expect((await get(deviceIds.provisioned)).json()).toMatchObject({ state: 'provisioned' });
      expect((await get(deviceIds.revoked)).json()).toMatchObject({ state: 'revoked' });
      expect((await get(deviceIds.registered)).json()).toMatchObject({ state: 'registered' });
      const crl = await ts.running.store.listRevokedCertificates('');
      expect(crl.map((c) => c.deviceId)).toContain(deviceIds.revoked);
    } finally {
      await ts.stop();
    }
  });

  it('refuses a non-empty target (exit 1) and changes nothing in it', async () => {
    const target = join(dir, 'back', 'provisiond.db');
    const before = await exportAll(new SqliteStore({ file: target }));
    const redisBefore = await exportAll(new RedisStore({ url: redis.url, prefix }));
    const [toSqlite, toRedis] = await Promise.all([
      cli(['store', 'copy', '--from', `sqlite:${sourceDb}`, '--to', `sqlite:${target}`]),
      cli(['store', 'copy', '--from', `sqlite:${sourceDb}`, '--to', redis.url, '--to-prefix', prefix]),
    ]);
    for (const run of [toSqlite, toRedis]) {
      expect(run.code).toBe(1);
      expect(run.stdout).toBe('');
      expect(run.stderr).toMatch(/store copy failed: TARGET_NOT_EMPTY: the target store is not empty \(tenants=2 .*devices=4 .*\); nothing was written/);
    }
    expect(await exportAll(new SqliteStore({ file: target }))).toStrictEqual(before);
    expect(await exportAll(new RedisStore({ url: redis.url, prefix }))).toStrictEqual(redisBefore);
  });

  it('copies into the store the service configuration names (--to config): here a Redis Cluster', async () => {
    const cluster = await startRedisCluster(dir);
    try {
      const env = {
        PROVISIOND_STORE__KIND: 'redis',
        PROVISIOND_STORE__REDIS_URL: cluster.nodes[0]!.url,
        PROVISIOND_STORE__REDIS_TOPOLOGY: 'cluster',
        PROVISIOND_STORE__REDIS_CLUSTER_NODES: JSON.stringify(cluster.nodes.slice(1).map((n) => `127.0.0.1:${n.port}`)),
        PROVISIOND_STORE__REDIS_PREFIX: 'copied:',
      };
      const run = await cli(['store', 'copy', '--from', `sqlite:${sourceDb}`, '--to', 'config'], env);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stderr).toContain('-> cluster redis://127.0.0.1:');
      const original = await exportAll(new SqliteStore({ file: sourceDb }));
      const settings = { url: cluster.nodes[0]!.url, topology: 'cluster' as const, prefix: 'copied:' };
      expect(await exportAll(new RedisStore(settings))).toStrictEqual(original);
      // --*-prefix does not go with config
      const mixed = await cli(['store', 'copy', '--from', `sqlite:${sourceDb}`, '--to', 'config', '--to-prefix', 'x:'], env);
      expect(mixed.code).toBe(2);
      expect(mixed.stderr).toContain('--to-prefix does not go with config');
    } finally {
      await cluster.stop();
    }
  });

  it('a missing source file is a usage error (exit 2) and is not created as an empty store', async () => {
    const missing = join(dir, 'nope.db');
    const run = await cli(['store', 'copy', '--from', `sqlite:${missing}`, '--to', redis.url, '--to-prefix', `${prefix}other:`]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('nope.db: no such file');
    expect(run.stderr).toContain('provisiond store copy --from SPEC --to SPEC');
    expect(existsSync(missing)).toBe(false);
  });
});
