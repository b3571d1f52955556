/**
 * Two provisiond PROCESSES on one real redis-server, deployed as several instances are: the same
 * data directory (CA and service secrets), the store and the broker's sessions and fan-out in
 * Redis. Devices are spread over both (HTTP calls and MQTT connections alternate), and racing
 * claims and CSRs for the same devices go to both processes at once.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, makeKeyAndCsr } from '../../firmware-sim/index.js';
import type { ClaimResponse, Device, DeviceEvent } from '../../schemas/types.js';
import { createStore, type Store } from '../../src/store/index.js';
import { backoffMs, bootstrapCsrOnce, estSimpleEnroll, sleep, type Bootstrap, type CsrTry } from '../helpers/bootstrap.js';
import { NETWORK } from '../helpers/device.js';
import { startServicePair, type RoleKeys, type ServicePair, type ServiceProcess } from '../helpers/process.js';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { waitUntil } from '../helpers/wait.js';

const ADMIN_KEY = `pdk_test_admin_${randomBytes(16).toString('hex')}`;
const PREFIX = `procs${Date.now()}:`;

let redis: RedisServer;
let dataDir: string;
let a: ServiceProcess;
let b: ServiceProcess;
let keys: RoleKeys;
/** The processes' store, read directly (certificates have no HTTP listing). */
let store: Store;

let pair: ServicePair | undefined;
const both = () => [a, b] as const;
/** On a failure, what the processes said. */
const outputs = () => pair?.outputs() ?? '';

beforeAll(async () => {
  redis = await startRedisServer();
  dataDir = await mkdtemp(join(tmpdir(), 'provisiond-procs-'));
  pair = await startServicePair({ dataDir, redisUrl: redis.url, prefix: PREFIX, adminKey: ADMIN_KEY });
  ({ a, b, keys } = pair);
  store = createStore({ kind: 'redis', url: redis.url, prefix: PREFIX });
  await store.start();
}, 60_000);

afterAll(async () => {
  await store?.stop();
  const exits = await pair?.stop();
  await redis?.stop();
  await rm(dataDir, { recursive: true, force: true });
  // a clean shutdown on SIGTERM (code 0), not a crash or a SIGKILL
  expect(exits, outputs()).toEqual([
    { code: 0, signal: null },
    { code: 0, signal: null },
  ]);
}, 60_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(outputs());
});

async function register(via: ServiceProcess, id: string, claimCode: string): Promise<void> {
  const res = await via.request('POST', '/v1/devices', { key: keys.factory, body: { id, model: 'thermostat', claimCode } });
  if (res.status !== 201) throw new Error(`register ${id} through ${via.name}: ${res.status} ${res.text}`);
}

function claim(via: ServiceProcess, claimCode: string, extra: Record<string, unknown> = {}) {
  return via.request<ClaimResponse & { code?: string }>('POST', '/v1/claims', {
    key: keys.installer,
    body: { claimCode, owner: 'alice', site: 'home', network: NETWORK, ...extra },
  });
}

async function device(via: ServiceProcess, id: string): Promise<Device> {
  const res = await via.request<Device>('GET', `/v1/devices/${id}`, { key: keys.viewer });
  if (res.status !== 200) throw new Error(`GET ${id} through ${via.name}: ${res.status} ${res.text}`);
  return res.body;
}

const profile = (minTlsVersion: string) => ({
  name: 'procs',
  items: [
    { id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} },
    {
      id: 'security',
      type: 'security-policy',
      required: true,
      priority: 10,
      await: false,
      data: { minTlsVersion, telemetryIntervalSeconds: 60, allowedTopics: [], firmwareFloor: '1.0.0' },
    },
  ],
});

describe('two provisiond processes on one Redis', () => {
  it('provisions devices spread over both; a profile change through A reaches the devices connected to B', async () => {
    const put = await a.request('PUT', '/v1/profiles/procs', { key: keys.admin, body: profile('1.2') });
    expect(put.status, put.text).toBe(200);

    // every combination of (register through, claim through, connect to) over 24 devices
    const n = 24;
    const plan = Array.from({ length: n }, (_, i) => ({
      id: `spread-${String(i).padStart(2, '0')}-${randomBytes(3).toString('hex')}`,
      claimCode: randomBytes(12).toString('hex'),
      registerVia: both()[i % 2]!,
      claimVia: both()[(i >> 1) % 2]!,
      broker: both()[(i >> 2) % 2]!,
    }));
    const sims: SimDevice[] = [];
    try {
      await Promise.all(
        plan.map(async (p) => {
          await register(p.registerVia, p.id, p.claimCode);
          const res = await claim(p.claimVia, p.claimCode, { profileId: 'procs' });
          expect(res.status, res.text).toBe(201);
          // the claim answers with the broker of the process that was asked; the device goes to the planned one
          expect(res.body.bootstrap!.mqttUrl).toBe(`mqtts://localhost:${p.claimVia.mqttPort}`);
          const sim = new SimDevice({ deviceId: p.id, model: 'thermostat', bootstrap: { ...res.body.bootstrap!, mqttUrl: p.broker.mqttUrl }, timeoutMs: 15_000 });
          sims.push(sim);
          await sim.run();
        }),
      );
      // the other process sees every device provisioned
      for (const [i, p] of plan.entries()) {
        const d = await device(both()[(i + 1) % 2]!, p.id);
        expect(d, p.id).toMatchObject({ state: 'provisioned', profileId: 'procs', profileVersion: 1, config: { version: 1 } });
      }

      // a profile change through A: a new config version for every device, published at once
      const change = await a.request<{ rollout: { updated: number } }>('PUT', '/v1/profiles/procs', { key: keys.admin, body: profile('1.3') });
      expect(change.status, change.text).toBe(200);
      expect(change.body.rollout.updated).toBe(n);
      // devices connected to B (and to A) apply and acknowledge version 2, read through either process
      await waitUntil(
        async () => {
          const views = await Promise.all(plan.map((p, i) => device(both()[i % 2]!, p.id)));
          return views.every(
            (d) =>
              d.state === 'provisioned' &&
              d.profileVersion === 2 &&
              d.config?.version === 2 &&
              d.config.items.every((item) => item.status === 'applied') &&
              d.config.items.find((item) => item.id === 'security')?.version === 2,
          );
        },
        'every device applied and acknowledged the new version',
        20_000,
      );
      for (const sim of sims) {
        // first version: the await item, then the rest; second version: the same again
        expect(sim.acks, sim.deviceId).toEqual([['network'], ['security'], ['network'], ['security']]);
      }
      // the acknowledgements of v2 made on B's connections are in each device's history
      for (const p of plan.filter((x) => x.broker === b)) {
        const history = await b.request<{ items: DeviceEvent[] }>('GET', `/v1/devices/${p.id}/history`, { key: keys.viewer });
        expect(history.body.items.filter((e) => e.type === 'config_acknowledged').length, p.id).toBeGreaterThanOrEqual(3);
        expect(history.body.items.filter((e) => e.type === 'provisioned').length, p.id).toBe(2);
      }
      expect(plan.filter((p) => p.broker === b)).toHaveLength(n / 2);
    } finally {
      await Promise.all(sims.map((s) => s.stop()));
    }
  }, 60_000);

  it('200 racing claims and 200 racing CSRs for 50 devices over both processes: one winner each, coded answers for the others', async () => {
    const n = 50;
    const per = 4;
    const devices = Array.from({ length: n }, (_, i) => ({
      id: `race-${String(i).padStart(2, '0')}-${randomBytes(3).toString('hex')}`,
      claimCode: randomBytes(12).toString('hex'),
    }));
    await Promise.all(devices.map((d, i) => register(both()[i % 2]!, d.id, d.claimCode)));

    // 1. claims: 4 per device at once, alternating between A and B
    const claims = await Promise.all(
      devices.flatMap((d, i) =>
        Array.from({ length: per }, async (_, j) => {
          const via = both()[(i + j) % 2]!;
          const res = await claim(via, d.claimCode, { owner: `owner-${j}` });
          return { device: d.id, via: via.name, status: res.status, code: res.body?.code, bootstrap: res.body?.bootstrap, owner: res.body?.device?.owner };
        }),
      ),
    );
    expect(claims).toHaveLength(n * per);
    const winners = new Map<string, { bootstrap: Bootstrap; owner: string }>();
    for (const d of devices) {
      const mine = claims.filter((c) => c.device === d.id);
      const won = mine.filter((c) => c.status === 201);
      expect(won, `${d.id}: ${JSON.stringify(mine.map((c) => [c.via, c.status, c.code]))}`).toHaveLength(1);
      // every other attempt got the documented coded answer
      expect(mine.filter((c) => c.status !== 201).map((c) => [c.status, c.code])).toEqual(Array(per - 1).fill([409, 'DEVICE_ALREADY_CLAIMED']));
      winners.set(d.id, { bootstrap: won[0]!.bootstrap!, owner: won[0]!.owner! });
    }
    // the record holds the winner's claim, whichever process is asked
    for (const [i, d] of devices.entries()) {
      const view = await device(both()[i % 2]!, d.id);
      expect(view, d.id).toMatchObject({ state: 'claimed', owner: winners.get(d.id)!.owner });
    }

    // 2. CSRs: 4 per device at once with the winning bootstrap credential, each for its own key,
    // alternating between A's and B's broker. MQTT allows one connection per client id (a new
    // CONNECT takes the session over, across instances too), so an attempt whose connection is
    // closed before its answer reconnects and re-sends the same CSR, as a device does
    // (docs/protocol.md §15). Each attempt publishes right behind its SUBSCRIBE, leaving the other
    // attempts as little time as possible to take its connection over before the CSR is in.
    const csrs = await Promise.all(
      devices.flatMap((d) => Array.from({ length: per }, () => makeKeyAndCsr(d.id).then((k) => ({ device: d.id, csrPem: k.csrPem })))),
    );
    /** Every rejection any connection of the device saw, also answers to sends whose connection was gone. */
    const seenRejections: string[] = [];
    /** Every certificate serial any connection of the device saw on csr/accepted. */
    const seenSerials = new Map<string, Set<string>>();
    const attempts = await Promise.all(
      csrs.map(async ({ device: id, csrPem }, k) => {
        const { bootstrap } = winners.get(id)!;
        const tries: CsrTry[] = [];
        for (let t = 0; t < 40; t++) {
          const broker = both()[(k + t) % 2]!;
          const outcome = await bootstrapCsrOnce(broker.mqttUrl, bootstrap, csrPem, {
            requestId: `k${k}-t${t}`,
            timeoutMs: 15_000,
            pipeline: true,
            observe: (topic, body) => {
              if (topic.endsWith('/csr/rejected')) seenRejections.push(`${id} ${String(body.code)}`);
              else seenSerials.set(id, (seenSerials.get(id) ?? new Set()).add(String(body.serial)));
            },
          });
          tries.push(outcome);
          const retry =
            outcome.kind === 'lost' ||
            (outcome.kind === 'refused' && outcome.connack === 3) ||
            (outcome.kind === 'rejected' && ['STORE_UNAVAILABLE', 'ISSUANCE_CONFLICT', 'INTERNAL_ERROR'].includes(outcome.code));
          if (!retry) break;
          await sleep(backoffMs(t, 20, 500));
        }
        return { device: id, tries, final: tries[tries.length - 1]! };
      }),
    );
    expect(attempts).toHaveLength(n * per);
    expect(seenRejections.filter((r) => !r.endsWith(' TOKEN_USED'))).toEqual([]);
    const summary = (id: string) =>
      JSON.stringify(
        attempts
          .filter((x) => x.device === id)
          .map((x) => x.tries.map((t) => (t.kind === 'accepted' ? `accepted ${t.answer.serial}` : t.kind === 'rejected' ? t.code : t.kind === 'refused' ? `connack ${t.connack}` : t.reason))),
      );
    for (const d of devices) {
      const mine = attempts.filter((x) => x.device === d.id);
      const accepted = mine.filter((x) => x.final.kind === 'accepted');
      // exactly one key got a certificate; every other attempt ended with the documented code
      expect(accepted, `${d.id}: ${summary(d.id)}`).toHaveLength(1);
      expect(
        mine.filter((x) => x.final.kind !== 'accepted').map((x) => (x.final.kind === 'rejected' ? x.final.code : x.final.kind)),
        `${d.id}: ${summary(d.id)}`,
      ).toEqual(Array(per - 1).fill('TOKEN_USED'));
      // whatever any connection saw: one certificate (a re-send for the winning key gets the same one)
      const final = accepted[0]!.final;
      const serial = final.kind === 'accepted' ? final.answer.serial : '';
      expect([...(seenSerials.get(d.id) ?? [])], summary(d.id)).toEqual([serial]);

      // exactly one certificate exists for the device, active, the one the winner received
      const view = await device(both()[d.id.length % 2]!, d.id);
      expect(view, d.id).toMatchObject({ state: 'identity_issued', certificateSerial: serial });
      const certs = await store.listCertificates(d.id);
      expect(
        certs.map((c) => [c.serial, c.status]),
        d.id,
      ).toEqual([[serial, 'active']]);
      const events = (await store.listEvents(d.id)).map((e) => e.type);
      expect(events, d.id).toEqual(['registered', 'claimed', 'identity_issued']);
    }
    // how much racing really happened (for the record; depends on timing)
    const lostTries = attempts.reduce((sum, x) => sum + x.tries.filter((t) => t.kind === 'lost').length, 0);
    console.info(`racing CSRs: ${attempts.length} attempts, ${attempts.reduce((s, x) => s + x.tries.length, 0)} sends, ${lostTries} connections taken over or lost`);
  }, 60_000);

  it('racing EST enrollments (4 at once per device, over both processes, no MQTT session takeover in between): one certificate, TOKEN_USED for the others', async () => {
    // Over MQTT a device has one live connection (a new CONNECT takes the session over), so
    // racing CSRs of one device mostly reach the service one after another. EST requests run side
    // by side: the service really decides between concurrent issuances of one credential.
    expect(a.estPort).toBeDefined();
    expect(b.estPort).toBeDefined();
    const n = 30;
    const per = 4;
    const devices = Array.from({ length: n }, (_, i) => ({
      id: `est-${String(i).padStart(2, '0')}-${randomBytes(3).toString('hex')}`,
      claimCode: randomBytes(12).toString('hex'),
    }));
    const bootstraps = await Promise.all(
      devices.map(async (d, i) => {
        await register(both()[i % 2]!, d.id, d.claimCode);
        const res = await claim(both()[(i + 1) % 2]!, d.claimCode);
        expect(res.status, res.text).toBe(201);
        return res.body.bootstrap!;
      }),
    );
    const csrs = await Promise.all(devices.flatMap((d) => Array.from({ length: per }, () => makeKeyAndCsr(d.id))));
    const results = await Promise.all(
      csrs.map(async ({ csrPem }, k) => {
        const i = Math.floor(k / per);
        const via = both()[k % 2]!;
        return { device: devices[i]!.id, ...(await estSimpleEnroll(via.estPort!, bootstraps[i]!, csrPem)) };
      }),
    );
    for (const d of devices) {
      const mine = results.filter((r) => r.device === d.id);
      const outcomes = mine.map((r) => (r.status === 200 ? 'issued' : `${r.status} ${r.code}`));
      expect(outcomes.filter((o) => o === 'issued'), `${d.id}: ${JSON.stringify(outcomes)}`).toHaveLength(1);
      // docs/protocol.md §19.2: TOKEN_USED, the credential was consumed by a CSR for another key
      expect(outcomes.filter((o) => o !== 'issued'), `${d.id}: ${JSON.stringify(outcomes)}`).toEqual(Array(per - 1).fill('401 TOKEN_USED'));
      const certs = await store.listCertificates(d.id);
      expect(certs.map((c) => c.status), d.id).toEqual(['active']);
      expect((await device(a, d.id)).certificateSerial).toBe(certs[0]!.serial);
    }
  }, 60_000);
});
