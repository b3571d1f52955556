/**
 * Crash consistency: provisiond is killed with SIGKILL at seeded random moments (at least five
 * times) during a provisioning run of 1,000 devices and started again each time on the same data
 * directory, the same ports and, for the Redis store, the same Redis. The installer app and the
 * devices follow docs/protocol.md only (test/helpers/resilient-device.ts: a lost claim answer ->
 * a new bootstrap credential; a lost certificate answer -> the same token and CSR again; a lost
 * session -> reconnect, re-subscribe, acknowledge again). Afterwards every device is provisioned
 * and the store is consistent (test/helpers/store-consistency.ts): no device lost, one active
 * certificate per device and it is the one the device holds, unique serials, no orphaned
 * certificate, one consumed token per certificate, valid histories.
 *
 * PROVISIOND_CRASH_SEED=<n> replays the kill schedule of a failed run (the seed is printed);
 * PROVISIOND_CRASH_DEVICES=<n> changes the fleet size for a local experiment;
 * PROVISIOND_CRASH_DEBUG=1 prints progress and the last steps of unfinished devices every 5 s.
 * The kills happen while the service runs (not while it starts); its first start, which creates
 * the CA and the secrets, is not killed.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { DeviceEvent, DeviceImportResult } from '../../schemas/types.js';
import { createStore, type Store } from '../../src/store/index.js';
import { sleep } from '../helpers/bootstrap.js';
import { createRoleKeys, startServiceProcess, type RoleKeys, type ServiceProcess } from '../helpers/process.js';
import { freePort, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { newTrace, pool, provisionResilient, type Unit, type UnitTrace } from '../helpers/resilient-device.js';
import { checkStoreConsistency } from '../helpers/store-consistency.js';
import { waitUntil } from '../helpers/wait.js';
import { rng } from '../../firmware-sim/fleet/plan.js';

const DEVICES = Number(process.env.PROVISIOND_CRASH_DEVICES ?? 1000);
const KILLS = 5;
const CONCURRENCY = 100;
const SEED = Number(process.env.PROVISIOND_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const ADMIN_KEY = `pdk_test_admin_${randomBytes(16).toString('hex')}`;

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
}, 60_000);

describe.each(['sqlite', 'redis'] as const)('SIGKILL during a provisioning run, %s store', (kind) => {
  it(`${DEVICES} devices, ${KILLS} kills: every device provisioned, the store consistent`, { timeout: 240_000 }, async () => {
    const t0 = Date.now();
    // the fleet runner's seeded PRNG, so that a failing kill schedule can be replayed
    const rand = rng(SEED + (kind === 'redis' ? 1 : 0));
    const dataDir = await mkdtemp(join(tmpdir(), `provisiond-crash-${kind}-`));
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    let redis: RedisServer | undefined;
    const prefix = `crash${Date.now()}:`;
    if (kind === 'redis') {
      redis = await startRedisServer();
      cleanup.push(() => redis!.stop());
    }
    // fixed ports: a restarted service is where the devices (and their bootstrap mqttUrl) left it
    const [httpPort, mqttPort] = [await freePort(), await freePort()];
    const settings = {
      adminApiKey: ADMIN_KEY,
      logLevel: 'warn',
      http: { port: httpPort },
      mqtt: { port: mqttPort },
      est: { enabled: false },
      ...(redis ? { store: { kind: 'redis', redisUrl: redis.url, redisPrefix: prefix } } : {}),
    };
    let generation = 0;
    const start = async () => startServiceProcess({ name: `${kind}#${generation++}`, dataDir, settings });
    let service: ServiceProcess = await start();
    cleanup.push(() => service.stop(5000));
    const keys: RoleKeys = await createRoleKeys(service, ADMIN_KEY);

    // the factory registered the fleet long before (one bulk import; the service made the codes)
    const idPrefix = `crash-${kind}-`;
    const ids = Array.from({ length: DEVICES }, (_, i) => `${idPrefix}${String(i).padStart(4, '0')}`);
    const imported = await service.request<DeviceImportResult>('POST', '/v1/devices/import', {
      key: keys.factory,
      body: { devices: ids.map((id) => ({ id, model: 'thermostat' })) },
      timeoutMs: 60_000,
    });
    expect(imported.status, imported.text).toBe(200);
    expect(imported.body.created).toBe(DEVICES);
    const units: Unit[] = imported.body.rows.map((r) => ({ id: r.id!, claimCode: r.claimCode! }));
    const traces = units.map((u) => newTrace(u.id));
    const tRun = Date.now();

    // the kill schedule: after a seeded share of the fleet is provisioned, and a seeded pause after the (re)start
    const thresholds = Array.from({ length: KILLS }, () => Math.floor(DEVICES * (0.05 + 0.85 * rand()))).sort((a, b) => a - b);
    const pauses = thresholds.map(() => 150 + Math.floor(rand() * 1200));
    const provisioned = () => traces.filter((t) => t.provisioned).length;
    const kills: string[] = [];
    const killer = (async () => {
      for (const [k, threshold] of thresholds.entries()) {
        const upAt = Date.now();
        await waitUntil(() => provisioned() >= threshold && Date.now() - upAt >= pauses[k]!, `${threshold} devices provisioned`, 120_000);
        const stages = {
          claim: traces.filter((t) => !t.held && !t.provisioned).length,
          session: traces.filter((t) => t.held && !t.provisioned).length,
        };
        process.kill(service.pid, 'SIGKILL');
        await waitUntil(() => service.exit !== undefined, `${service.name} is gone`, 10_000);
        expect(service.exit?.signal).toBe('SIGKILL');
        const killedAt = Date.now();
        service = await start();
        kills.push(
          `#${k + 1} at ${((killedAt - tRun) / 1000).toFixed(1)} s: ${provisioned()} provisioned, ${stages.claim} before, ${stages.session} after their certificate, up again in ${((Date.now() - killedAt) / 1000).toFixed(1)} s`,
        );
      }
    })();

    const debug = process.env.PROVISIOND_CRASH_DEBUG
      ? setInterval(() => {
          const stuck = traces.filter((t) => !t.provisioned && t.steps.length > 0).slice(0, 3);
          console.error(`[${((Date.now() - tRun) / 1000).toFixed(0)} s] ${provisioned()} provisioned; kills ${kills.length}; ${service.name} exit ${JSON.stringify(service.exit)}\n${stuck.map((t) => `  ${t.id}: ${t.steps.slice(-4).join('; ')}`).join('\n')}`);
        }, 5000)
      : undefined;
    cleanup.push(async () => clearInterval(debug));
    const run = pool(units, CONCURRENCY, (unit, i) =>
      provisionResilient(unit, traces[i]!, { httpUrl: () => `http://127.0.0.1:${httpPort}`, installerKey: keys.installer, viewerKey: keys.viewer }),
    );
    await Promise.all([run, killer]).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\nseed ${SEED}; kills: ${kills.join('; ')}\n--- ${service.name}:\n${service.output().slice(-3000)}`);
    });
    const runSeconds = (Date.now() - tRun) / 1000;
    expect(kills).toHaveLength(KILLS);
    expect(traces.filter((t) => !t.provisioned).map((t) => t.id)).toEqual([]);

    // the last one stops cleanly, then the store is read directly
    expect(await service.stop(30_000), service.output().slice(-3000)).toEqual({ code: 0, signal: null });
    const store: Store = createStore(redis ? { kind: 'redis', url: redis.url, prefix } : { kind: 'sqlite', file: join(dataDir, 'provisiond.db') });
    await store.start();
    let report;
    const resent: string[] = [];
    try {
      report = await checkStoreConsistency(store, {
        ids,
        prefix: idPrefix,
        state: 'provisioned',
        held: new Map(traces.map((t) => [t.id, { serial: t.held!.certificate.serial, pem: t.held!.certificate.certificate }])),
        path: ['registered', 'claimed', 'identity_issued', 'configuring', 'provisioned'],
      });
      // devices whose certificate was committed before its answer was lost (served again per §15)
      for (const t of traces.filter((x) => x.lastLostAt.csr !== undefined)) {
        const issued = (await store.listEvents(t.id)).find((e: DeviceEvent) => e.type === 'identity_issued');
        if (issued && Date.parse(issued.at) < t.lastLostAt.csr!) resent.push(t.id);
      }
    } finally {
      await store.stop();
    }
    expect(report.problems).toEqual([]);
    expect(report.devices).toBe(DEVICES);
    // a first provisioning issues exactly one certificate per device: nothing signed twice, nothing orphaned
    expect(report.certificates).toBe(DEVICES);

    const sum = (f: (t: UnitTrace) => number) => traces.reduce((s, t) => s + f(t), 0);
    const touched = { claim: traces.filter((t) => t.lost.claim > 0).length, csr: traces.filter((t) => t.lost.csr > 0).length, session: traces.filter((t) => t.lost.session > 0).length };
    // the kills hit every stage
    expect(touched.claim).toBeGreaterThan(0);
    expect(touched.csr).toBeGreaterThan(0);
    expect(touched.session).toBeGreaterThan(0);
    console.info(
      `crash-consistency ${kind}: seed ${SEED}, ${DEVICES} devices provisioned in ${runSeconds.toFixed(1)} s run (${((Date.now() - t0) / 1000).toFixed(1)} s in all); ` +
        `kills: ${kills.join('; ')}; ` +
        `devices that lost an answer or a connection: claim ${touched.claim}, CSR ${touched.csr}, session ${touched.session}; ` +
        `claims recorded but unanswered (new credential): ${sum((t) => t.reissued)}; certificates committed but unanswered (sent again, §15): ${resent.length}; ` +
        `unused bootstrap tokens: ${report.unusedTokens}`,
    );
  });
});
