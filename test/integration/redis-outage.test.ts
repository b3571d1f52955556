/**
 * Redis goes away for 10 s in the middle of a provisioning run of two provisiond processes, and
 * comes back on the same port with its data (AOF). While it is down the HTTP API answers
 * 503 STORE_UNAVAILABLE with Retry-After and devices are refused with CONNACK 3; the installer
 * app and the devices retry as docs/protocol.md §15 and docs/operations.md say (Retry-After,
 * exponential back-off, the same key for a re-sent CSR); afterwards every device is provisioned
 * and nothing the store held is lost.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, makeKeyAndCsr } from '../../firmware-sim/index.js';
import type { ClaimResponse, Device, DeviceEvent, MqttCsrAccepted } from '../../schemas/types.js';
import { createStore } from '../../src/store/index.js';
import { backoffMs, bootstrapCsrOnce, sleep, type Bootstrap } from '../helpers/bootstrap.js';
import { NETWORK, connackCode } from '../helpers/device.js';
import { startServicePair, type RoleKeys, type ServicePair, type ServiceProcess } from '../helpers/process.js';
import { freePort, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { waitUntil } from '../helpers/wait.js';

const ADMIN_KEY = `pdk_test_admin_${randomBytes(16).toString('hex')}`;
const PREFIX = `outage${Date.now()}:`;
const OUTAGE_MS = 10_000;
/** Polls start until then, so that each is answered while Redis is still down. */
const POLL_UNTIL_MS = 6_000;
/** Codes after which docs/protocol.md §15 says to retry with back-off. */
const RETRY_CODES = ['STORE_UNAVAILABLE', 'ISSUANCE_CONFLICT', 'INTERNAL_ERROR'];

let redisDir: string;
let redisPort: number;
let redis: RedisServer;
let dataDir: string;
let a: ServiceProcess;
let b: ServiceProcess;
let keys: RoleKeys;
let rootPem: string;

let pair: ServicePair | undefined;
const both = () => [a, b] as const;
const outputs = () => pair?.outputs() ?? '';

beforeAll(async () => {
  redisDir = await mkdtemp(join(tmpdir(), 'redis-aof-'));
  redisPort = await freePort();
  redis = await startRedisServer({ port: redisPort, dataDir: redisDir });
  dataDir = await mkdtemp(join(tmpdir(), 'provisiond-outage-'));
  pair = await startServicePair({ dataDir, redisUrl: redis.url, prefix: PREFIX, adminKey: ADMIN_KEY });
  ({ a, b, keys } = pair);
  rootPem = (await a.request('GET', '/v1/ca/root.pem')).text;
}, 60_000);

afterAll(async () => {
  const exits = await pair?.stop();
  await redis?.stop();
  await rm(dataDir, { recursive: true, force: true });
  await rm(redisDir, { recursive: true, force: true });
  expect(exits, outputs()).toEqual([
    { code: 0, signal: null },
    { code: 0, signal: null },
  ]);
}, 60_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(outputs());
});

/** Stop before a stage until told (to start that stage while Redis is down). */
interface Hold {
  before: 'enroll' | 'configure';
  reached: () => void;
  go: Promise<void>;
}

interface Trace {
  id: string;
  /** What went wrong on the way, in order (for failure messages and the retry assertions). */
  steps: string[];
  claim503: number;
  sim?: SimDevice;
  provisioned: boolean;
}

/**
 * The installer app and the device of one unit, retrying as documented:
 *  - claim: on 503 wait Retry-After and claim again; a claim that answered 503 may still have
 *    been recorded, so DEVICE_ALREADY_CLAIMED after a 503 means: ask for a new bootstrap credential;
 *  - CSR over the bootstrap session: one key, persisted before the first send; no answer, CONNACK 3
 *    or a retryable code -> back off and re-send the same CSR (the same certificate comes back);
 *  - configuration: firmware-sim's operational session; on any failure reconnect after a back-off;
 *    when no configuration comes because everything is applied already (an answer lost in the
 *    outage), the device record says provisioned (§15, "No configuration within 15 s").
 * Back-off: 1 s doubling, ±20 %, capped at 4 s here (the protocol caps at 60 s) to keep the test short.
 */
async function provision(trace: Trace, claimCode: string, i: number, hold?: Hold): Promise<void> {
  const api = (t: number) => both()[(i + t) % 2]!;
  const step = (s: string) => trace.steps.push(`${new Date().toISOString().slice(11, 23)} ${s}`);

  // 1. claim
  let bootstrap: Bootstrap | undefined;
  for (let t = 0; !bootstrap; t++) {
    if (t > 20) throw new Error(`${trace.id}: no claim after ${t} attempts: ${trace.steps.join('; ')}`);
    const via = api(t);
    const res = await via.request<ClaimResponse & { code?: string; retryAfterSeconds?: number }>('POST', '/v1/claims', {
      key: keys.installer,
      body: { claimCode, owner: 'alice', site: 'home', network: NETWORK },
    });
    if (res.status === 201) {
      bootstrap = res.body.bootstrap!;
      step(`claimed through ${via.name}`);
    } else if (res.status === 503) {
      expect(res.body.code).toBe('STORE_UNAVAILABLE');
      expect(res.headers.get('retry-after')).toBe('5');
      trace.claim503++;
      step(`claim through ${via.name}: 503 ${res.body.code}`);
      await sleep(Number(res.headers.get('retry-after')) * 1000);
    } else if (res.status === 409 && res.body.code === 'DEVICE_ALREADY_CLAIMED' && trace.claim503 > 0) {
      step(`claim through ${via.name}: 409 after a 503, asking for a new bootstrap credential`);
      for (let r = 0; !bootstrap; r++) {
        if (r > 10) throw new Error(`${trace.id}: no new bootstrap credential: ${trace.steps.join('; ')}`);
        const re = await api(t + r).request<ClaimResponse & { code?: string }>('POST', `/v1/devices/${trace.id}/bootstrap`, { key: keys.installer });
        if (re.status === 201) bootstrap = re.body.bootstrap!;
        else if (re.status === 503) await sleep(Number(re.headers.get('retry-after') ?? 5) * 1000);
        else throw new Error(`${trace.id}: new bootstrap credential: ${re.status} ${re.text}`);
      }
    } else {
      throw new Error(`${trace.id}: claim through ${via.name}: ${res.status} ${res.text}; ${trace.steps.join('; ')}`);
    }
  }

  if (hold?.before === 'enroll') {
    hold.reached();
    await hold.go;
  }

  // 2. certificate: one key for every re-send
  const { keyPem, csrPem } = await makeKeyAndCsr(trace.id);
  let cert: MqttCsrAccepted | undefined;
  let refused5 = 0;
  for (let t = 0; !cert; t++) {
    if (t > 25) throw new Error(`${trace.id}: no certificate after ${t} sends: ${trace.steps.join('; ')}`);
    const broker = both()[(i + t) % 2]!;
    const outcome = await bootstrapCsrOnce(broker.mqttUrl, bootstrap, csrPem, { requestId: `r${t}`, timeoutMs: 5000 });
    if (outcome.kind === 'accepted') {
      cert = outcome.answer;
      step(`certificate ${cert.serial} from ${broker.name}`);
      break;
    }
    const what = outcome.kind === 'rejected' ? outcome.code : outcome.kind === 'refused' ? `CONNACK ${outcome.connack}` : `lost (${outcome.reason})`;
    step(`CSR on ${broker.name}: ${what}`);
    const retry =
      outcome.kind === 'lost' ||
      (outcome.kind === 'refused' && (outcome.connack === 3 || (outcome.connack === 5 && ++refused5 <= 3))) ||
      (outcome.kind === 'rejected' && RETRY_CODES.includes(outcome.code));
    if (!retry) throw new Error(`${trace.id}: CSR not retryable: ${trace.steps.join('; ')}`);
    await sleep(backoffMs(t, 1000, 4000));
  }

  if (hold?.before === 'configure') {
    hold.reached();
    await hold.go;
  }

  // 3. configuration, acknowledgement, provisioned
  for (let t = 0; ; t++) {
    if (t > 20) throw new Error(`${trace.id}: not provisioned after ${t} sessions: ${trace.steps.join('; ')}`);
    const broker = both()[(i + t) % 2]!;
    const sim = new SimDevice({
      deviceId: trace.id,
      model: 'thermostat',
      broker: { mqttUrl: broker.mqttUrl, caCertificate: bootstrap.caCertificate },
      identity: { keyPem, certPem: cert.certificate, chainPems: cert.chain },
      timeoutMs: 4000,
    });
    try {
      await sim.run();
      trace.sim = sim;
      trace.provisioned = true;
      step(`provisioned on ${broker.name}`);
      return;
    } catch (err) {
      await sim.stop();
      const code = (err as { code?: unknown }).code;
      step(`session on ${broker.name}: ${String(code ?? '')} ${(err as Error).message}`);
    }
    // the answer to the last acknowledgement may have been lost in the outage: ask the record
    const seen = await api(t)
      .request<Device>('GET', `/v1/devices/${trace.id}`, { key: keys.viewer })
      .catch(() => undefined);
    if (seen?.status === 200 && seen.body.state === 'provisioned') {
      trace.provisioned = true;
      step('the record says provisioned');
      return;
    }
    await sleep(backoffMs(t, 1000, 4000));
  }
}

describe('a 10 s Redis outage during a provisioning run on two processes', () => {
  it('answers 503/CONNACK 3 while Redis is down; afterwards every device is provisioned and nothing is lost', async () => {
    const n = 40;
    const units = Array.from({ length: n }, (_, i) => ({
      id: `out-${String(i).padStart(2, '0')}-${randomBytes(3).toString('hex')}`,
      claimCode: randomBytes(12).toString('hex'),
    }));
    // registered before the run (the factory did its part)
    await Promise.all(
      units.map(async (u, i) => {
        const res = await both()[i % 2]!.request('POST', '/v1/devices', { key: keys.factory, body: { id: u.id, model: 'thermostat', claimCode: u.claimCode } });
        expect(res.status, res.text).toBe(201);
      }),
    );
    const traces: Trace[] = units.map((u) => ({ id: u.id, steps: [], claim503: 0, provisioned: false }));
    const runs: Promise<void>[] = [];
    let down!: () => void;
    const redisDown = new Promise<void>((resolve) => (down = resolve));
    let held = 0;
    const hold = (before: Hold['before']): Hold => ({ before, reached: () => void held++, go: redisDown });
    // four groups of ten: free runs started before the outage (some are caught in flight), devices
    // that start their CSR or their operational session while Redis is down, and devices whose
    // installer claims while Redis is down
    const groups = { free: [0, 10], enrollDuring: [10, 20], configureDuring: [20, 30], claimDuring: [30, 40] } as const;
    const launch = (range: readonly [number, number], everyMs: number, h?: Hold['before']) =>
      (async () => {
        for (let i = range[0]; i < range[1]; i++) {
          runs.push(provision(traces[i]!, units[i]!.claimCode, i, h ? hold(h) : undefined));
          await sleep(everyMs);
        }
      })();
    const inGroup = (g: readonly [number, number]) => traces.slice(g[0], g[1]);

    try {
      // at a modest rate; Redis goes down once some devices are provisioned and the others wait at their stage
      const launched = [launch(groups.free, 150), launch(groups.enrollDuring, 50, 'enroll'), launch(groups.configureDuring, 50, 'configure')];
      await waitUntil(() => traces.filter((t) => t.provisioned).length >= 6 && held === 20, 'six devices are provisioned and twenty wait', 30_000);
      const before = traces.filter((t) => t.provisioned).length;
      const provisionedOne = traces.find((t) => t.provisioned && t.sim)!;
      await redis.stop();
      const downAt = Date.now();
      down();
      launched.push(launch(groups.claimDuring, 150));

      // while down: every HTTP answer is 503 STORE_UNAVAILABLE with Retry-After; devices get CONNACK 3
      // (a request waits for the store's reconnection attempts before it fails: polls run side by side)
      type Poll = { via: string; status: number; code: unknown; retryAfter: string | null };
      const pending: Promise<Poll>[] = [];
      for (let k = 0; Date.now() - downAt < POLL_UNTIL_MS; k++) {
        const via = both()[k % 2]!;
        pending.push(
          via.request<{ code?: string }>('GET', `/v1/devices/${units[k % n]!.id}`, { key: keys.viewer }).then((res) => ({
            via: via.name,
            status: res.status,
            code: res.body?.code,
            retryAfter: res.headers.get('retry-after'),
          })),
        );
        await sleep(250);
      }
      // a provisioned device reconnecting (operational session) to each process
      const sim = provisionedOne.sim!;
      const connacks = await Promise.all(both().map((p) => connackCode(p.mqttUrl, { clientId: sim.deviceId, key: sim.keyPem, cert: sim.certificatePem, ca: rootPem })));
      const polls = await Promise.all(pending);
      const remaining = OUTAGE_MS - (Date.now() - downAt);
      if (remaining > 0) await sleep(remaining); // the outage itself: 10 s
      redis = await startRedisServer({ port: redisPort, dataDir: redisDir });

      expect(polls.length).toBeGreaterThanOrEqual(10);
      expect(polls.filter((p) => p.status !== 503 || p.code !== 'STORE_UNAVAILABLE' || p.retryAfter !== '5')).toEqual([]);
      expect(new Set(polls.map((p) => p.via))).toEqual(new Set(['A', 'B']));
      expect(connacks).toEqual([3, 3]);

      // back: every device gets there, through the documented retries
      await Promise.all(launched);
      await Promise.all(runs);
      expect(traces.filter((t) => !t.provisioned).map((t) => t.id)).toEqual([]);
      // what each stage started during the outage was told, and retried
      for (const t of inGroup(groups.claimDuring)) expect(t.claim503, `${t.id}: ${t.steps.join('; ')}`).toBeGreaterThanOrEqual(1);
      for (const t of inGroup(groups.enrollDuring)) expect(t.steps.join('; '), t.id).toMatch(/CSR on [AB]: (CONNACK 3|STORE_UNAVAILABLE)/);
      for (const t of inGroup(groups.configureDuring)) expect(t.steps.join('; '), t.id).toMatch(/session on [AB]: 3 /);
      console.info(
        `outage: ${before} provisioned before it, ${polls.length} polls answered 503, ` +
          `${traces.filter((t) => t.steps.some((s) => / (CSR|session) on /.test(s))).length} devices retried over MQTT, ` +
          `${traces.reduce((s, t) => s + t.claim503, 0)} claims answered 503`,
      );

      // nothing lost: every registered device is listed, provisioned, with its whole history
      const listed: Device[] = [];
      for (let after = ''; ; ) {
        const page = await b.request<{ items: Device[]; next?: string }>('GET', `/v1/devices?limit=100${after ? `&after=${after}` : ''}`, { key: keys.viewer });
        expect(page.status, page.text).toBe(200);
        listed.push(...page.body.items);
        if (!page.body.next) break;
        after = page.body.next;
      }
      const ours = listed.filter((d) => d.id.startsWith('out-'));
      expect(ours.map((d) => d.id).sort()).toEqual(units.map((u) => u.id).sort());
      expect(ours.filter((d) => d.state !== 'provisioned').map((d) => `${d.id} ${d.state}`)).toEqual([]);

      const store = createStore({ kind: 'redis', url: redis.url, prefix: PREFIX });
      await store.start();
      try {
        for (const [i, u] of units.entries()) {
          const history = await both()[i % 2]!.request<{ items: DeviceEvent[] }>('GET', `/v1/devices/${u.id}/history`, { key: keys.viewer });
          expect(history.status).toBe(200);
          const path = history.body.items.flatMap((e) => (e.to ? [e.to] : [])).filter((s, k, all) => k === 0 || all[k - 1] !== s);
          expect(path, `${u.id}: ${JSON.stringify(history.body.items.map((e) => e.type))}`).toEqual(['registered', 'claimed', 'identity_issued', 'configuring', 'provisioned']);
          const types = history.body.items.map((e) => e.type);
          for (const type of ['registered', 'claimed', 'identity_issued', 'config_delivered', 'config_acknowledged', 'provisioned'] as const) {
            expect(types, u.id).toContain(type);
          }
          // one certificate, the current one
          const view = ours.find((d) => d.id === u.id)!;
          expect((await store.listCertificates(u.id)).map((c) => [c.serial, c.status]), u.id).toEqual([[view.certificateSerial, 'active']]);
        }
      } finally {
        await store.stop();
      }
      // both processes lived through it
      expect(both().map((p) => p.exit)).toEqual([undefined, undefined]);
    } finally {
      await Promise.allSettled(runs);
      await Promise.all(traces.map((t) => t.sim?.stop()));
    }
  }, 90_000);
});
