/**
 * Footprint of a Redis deployment, for sizing: what one device costs in Redis (the store's records
 * and the broker's session keys) and in a provisiond process (a held mutual-TLS connection).
 * provisiond runs as its own process (as in production), the simulated fleet in this one, on one
 * redis-server started here.
 *
 *   npx tsx bench/footprint.ts [devices]
 */
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { runFleet } from '../firmware-sim/index.js';
import { createRoleKeys, startServiceProcess, type ServiceProcess } from '../test/helpers/process.js';
import { startRedisServer } from '../test/helpers/redis-server.js';

export interface FootprintResult {
  devices: number;
  redisBytesPerDevice: number;
  redisKeysPerDevice: number;
  redisCommandsPerDevice: number;
  storeBytesPerDevice: number;
  sessionBytesPerDevice: number;
  rssBaselineMiB: number;
  rssPerHeldDeviceKiB: number;
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
  return kb * 1024;
}

async function commandsProcessed(redis: Redis): Promise<number> {
  return Number(/total_commands_processed:(\d+)/.exec(await redis.info('stats'))?.[1] ?? NaN);
}

async function usedMemory(redis: Redis): Promise<number> {
  await redis.call('MEMORY', 'PURGE').catch(() => undefined);
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? NaN);
}

/** Bytes of every key under `match` (MEMORY USAGE, sampled exactly). */
async function bytesOf(redis: Redis, match: string): Promise<{ bytes: number; keys: number }> {
  let cursor = '0';
  let bytes = 0;
  let keys = 0;
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', match, 'COUNT', 1000);
    cursor = next;
    for (const k of batch) {
      bytes += Number(await redis.memory('USAGE', k, 'SAMPLES', 0));
      keys++;
    }
  } while (cursor !== '0');
  return { bytes, keys };
}

/** The process settles (GC, TLS buffers) before its RSS is read. */
async function settledRss(p: ServiceProcess): Promise<number> {
  await new Promise((r) => setTimeout(r, 1500));
  return rssBytes(p.pid);
}

export async function benchFootprint(devices = 2000): Promise<FootprintResult> {
  const dir = await mkdtemp(join(tmpdir(), 'provisiond-footprint-'));
  const redisServer = await startRedisServer();
  const redis = new Redis(redisServer.url);
  const admin = (await import('node:crypto')).randomBytes(24).toString('base64url');
  const start = () =>
    startServiceProcess({
      name: 'footprint',
      dataDir: dir,
      // every simulated device comes from this machine's address: no per-address connection limit
      settings: { adminApiKey: admin, logLevel: 'error', est: { enabled: false }, mqtt: { connectionRatePerAddressPerSecond: 0 }, store: { kind: 'redis', redisUrl: redisServer.url, redisPrefix: 'fp:' } },
    });
  const service = await start();
  try {
    const keys = await createRoleKeys(service, admin);
    const redisBefore = await usedMemory(redis);
    const rssBefore = await settledRss(service);
    const commandsBefore = await commandsProcessed(redis);
    const fleet = await runFleet({
      apiUrl: service.httpUrl,
      factoryKey: keys.factory,
      installerKey: keys.installer,
      devices,
      concurrency: 40,
      hold: true,
    });
    if (fleet.report.failed > 0) throw new Error(`${fleet.report.failed} devices failed: ${JSON.stringify(fleet.report.errors)}`);
    const commands = (await commandsProcessed(redis)) - commandsBefore;
    const rssHeld = await settledRss(service);
    const redisAfter = await usedMemory(redis);
    const store = await bytesOf(redis, 'fp:*');
    const sessions = await bytesOf(redis, 'fp:mqtt:*');
    await fleet.stop();
    const storeOnly = store.bytes - sessions.bytes;
    return {
      devices,
      redisBytesPerDevice: Math.round((redisAfter - redisBefore) / devices),
      redisKeysPerDevice: Math.round((store.keys / devices) * 10) / 10,
      redisCommandsPerDevice: Math.round(commands / devices),
      storeBytesPerDevice: Math.round(storeOnly / devices),
      sessionBytesPerDevice: Math.round(sessions.bytes / devices),
      rssBaselineMiB: Math.round((rssBefore / 2 ** 20) * 10) / 10,
      rssPerHeldDeviceKiB: Math.round(((rssHeld - rssBefore) / devices / 1024) * 10) / 10,
    };
  } finally {
    await service.stop().catch(() => undefined);
    redis.disconnect();
    await redisServer.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export function printFootprint(r: FootprintResult): void {
  console.log(`footprint on Redis (${r.devices} devices provisioned and held over mutual TLS, provisiond in its own process)`);
  console.log(`  Redis used_memory per device     ${r.redisBytesPerDevice} B (keys per device ${r.redisKeysPerDevice})`);
  console.log(`    of which store records         ${r.storeBytesPerDevice} B, broker sessions ${r.sessionBytesPerDevice} B (MEMORY USAGE)`);
  console.log(`  Redis commands per provisioning  ${r.redisCommandsPerDevice} (store, broker sessions, fan-out, throttle)`);
  console.log(`  provisiond RSS, empty            ${r.rssBaselineMiB} MiB`);
  console.log(`  RSS per held connection          ${r.rssPerHeldDeviceKiB} KiB`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  printFootprint(await benchFootprint(Number(process.argv[2] ?? 2000)));
}
