/**
 * Held fleet: N devices connected over mutual TLS to one provisiond process, what they cost it in
 * memory, and how long they take to all come back after a broker restart.
 *
 * provisiond runs in its own process (SQLite store in a temp dir), so its RSS is its own; the
 * simulated devices run on worker threads of this process (one per core by default: connecting
 * 10,000 devices is more than one core of TLS and MQTT work on the device side too). The
 * identities are made the fast way the factory line offers (docs/factory-line.md): bulk import,
 * in-line issuance of the devices' CSRs (made with node:crypto) in batches of 1,000 with their
 * baseline configuration ("fully pre-provisioned"), then a claim per device without a network,
 * after which the device is `provisioned` and only holds its operational session. Each device
 * connects as firmware does (docs/protocol.md §8-§9: its certificate plus the issuing CA, clean
 * session, keepalive 60 s, two SUBSCRIBEs with `config` last) and, when its connection is lost,
 * retries with the documented back-off (§15: 1 s doubling to 60 s, ±20 % jitter; §20: 15 s for
 * each answer).
 *
 * The service's heap is read through a module the bench preloads into the service process only
 * (NODE_OPTIONS): it answers SIGUSR2 with process.memoryUsage() after a full GC.
 *
 *   npx tsx bench/hold.ts [devices] [device threads]
 *   HOLD_BENCH_CPU_PROFILE=/tmp/prof npx tsx bench/hold.ts 3000     # also a CPU profile of each service process
 *   HOLD_BENCH_HEAP_SNAPSHOT=/tmp/heap npx tsx bench/hold.ts 2000   # and a heap snapshot wherever memory is read
 *   HOLD_BENCH_SPREAD_S=10 npx tsx bench/hold.ts                   # not the documented rule: first retry after 0-10 s
 */
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import mqtt, { type MqttClient } from 'mqtt';
import { createRoleKeys, startServiceProcess, type ServiceProcess } from '../test/helpers/process.js';

export interface HoldResult {
  devices: number;
  setupSeconds: number;
  rssEmptyMiB: number;
  rssHeldMiB: number;
  rssPerDeviceKiB: number;
  /** process.memoryUsage() of the service after a full GC, with N held. */
  heapUsedMiB: number;
  heapPerDeviceKiB: number;
  heapTotalMiB: number;
  /** RSS right after that GC. */
  rssHeldGcMiB: number;
  deviceThreads: number;
  connectsPerSecond: number;
  /** CPU seconds used by the service and by this process (the devices) while connecting N. */
  connectCpu: { service: number; devices: number; wall: number };
  restart: {
    /** SIGTERM to the exit of the old process. */
    stopMs: number;
    /** SIGTERM to the ready line of the new process. */
    readyMs: number;
    /** SIGTERM to the last device connected and subscribed again. */
    allBackMs: number;
    p50Ms: number;
    p99Ms: number;
    /** Most connection attempts one device needed to come back. */
    maxAttempts: number;
    /** Attempts that failed after the SIGTERM, by reason (ECONNREFUSED while no process listens). */
    failedAttempts: Record<string, number>;
    /** Devices back at 5 s, 10 s, ... after the SIGTERM. */
    curve: number[];
    /** CPU seconds from the new process' ready line (service) or the SIGTERM (devices) to all back. */
    cpu: { service: number; devices: number };
    reconnected: number;
    rssAfterMiB: number;
    rssAfterGcMiB: number;
    heapUsedAfterMiB: number;
    heapTotalAfterMiB: number;
  };
}

// ---- identities ------------------------------------------------------------------------------

function der(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

const OID_CN = Buffer.from([0x06, 0x03, 0x55, 0x04, 0x03]);
const ECDSA_SHA256 = der(0x30, Buffer.from([0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));

/**
 * A P-256 key and a PKCS#10 CSR for it with node:crypto only (about ten times faster than the
 * firmware simulator's @peculiar/x509 path, which matters for 10,000 devices).
 */
function keyAndCsr(cn: string): { keyPem: string; csrPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const subject = der(0x30, der(0x31, der(0x30, OID_CN, der(0x0c, Buffer.from(cn, 'utf8')))));
  const info = der(0x30, Buffer.from([0x02, 0x01, 0x00]), subject, spki, Buffer.from([0xa0, 0x00]));
  const signature = sign('sha256', info, privateKey);
  const csr = der(0x30, info, ECDSA_SHA256, der(0x03, Buffer.from([0]), signature));
  const csrPem = `-----BEGIN CERTIFICATE REQUEST-----\n${csr.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END CERTIFICATE REQUEST-----\n`;
  return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), csrPem };
}

interface Identity {
  id: string;
  keyPem: string;
  certPem: string;
}

async function check<T>(what: string, res: Promise<{ status: number; body: T; text: string }>, want = 200): Promise<T> {
  const r = await res;
  if (r.status !== want) throw new Error(`${what}: HTTP ${r.status} ${r.text.slice(0, 500)}`);
  return r.body;
}

/** Registered, certified at the factory with a baseline, claimed without a network: `provisioned`. */
async function makeFleet(service: ServiceProcess, admin: string, n: number): Promise<{ identities: Identity[]; issuingPem: string }> {
  const keys = await createRoleKeys(service, admin);
  const ids = Array.from({ length: n }, (_, i) => `hold-${String(i).padStart(6, '0')}`);
  const imported = await check(
    'import',
    service.request<{ created: number; rows: { id: string; status: string; claimCode?: string }[] }>('POST', '/v1/devices/import', {
      key: keys.factory,
      body: { devices: ids.map((id) => ({ id, model: 'thermostat' })) },
      timeoutMs: 300_000,
    }),
  );
  if (imported.created !== n) throw new Error(`import created ${imported.created} of ${n}`);
  const codes = new Map(imported.rows.map((r) => [r.id, r.claimCode!]));
  const identities: Identity[] = [];
  let issuingPem = '';
  for (let from = 0; from < n; from += 1000) {
    const batch = ids.slice(from, from + 1000).map((id) => ({ id, ...keyAndCsr(id) }));
    const issued = await check(
      'issue',
      service.request<{ issued: number; chain: string[]; results: { deviceId: string; status: string; code?: string; certificate?: string }[] }>(
        'POST',
        '/v1/factory/certificates',
        { key: keys.factory, body: { baseline: true, devices: batch.map((d) => ({ deviceId: d.id, csr: d.csrPem })) }, timeoutMs: 300_000 },
      ),
    );
    if (issued.issued !== batch.length) throw new Error(`issued ${issued.issued} of ${batch.length}: ${JSON.stringify(issued.results.find((r) => r.status !== 'issued'))}`);
    issuingPem = issued.chain[0]!;
    batch.forEach((d, i) => identities.push({ id: d.id, keyPem: d.keyPem, certPem: issued.results[i]!.certificate! }));
  }
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < n) {
        const id = ids[next++]!;
        const claim = await check(
          `claim ${id}`,
          service.request<{ device: { state: string } }>('POST', '/v1/claims', { key: keys.installer, body: { claimCode: codes.get(id), owner: 'Bench', site: 'hold' } }),
          201,
        );
        if (claim.device.state !== 'provisioned') throw new Error(`${id} is ${claim.device.state} after its claim`);
      }
    }),
  );
  return { identities, issuingPem };
}

// ---- devices ---------------------------------------------------------------------------------

/**
 * docs/protocol.md §15: 1 s doubling to 60 s, ±20 % jitter. With HOLD_BENCH_SPREAD_S=S (not the
 * documented rule; to measure a proposal), the first retry after an established session broke
 * waits a uniform 0-S s instead.
 */
function backoffMs(failures: number): number {
  const spread = Number(process.env.HOLD_BENCH_SPREAD_S ?? 0);
  if (failures === 0 && spread > 0) return Math.random() * spread * 1000;
  return Math.min(60_000, 1000 * 2 ** failures) * (0.8 + 0.4 * Math.random());
}

/**
 * A device that only holds its operational session, with firmware's reconnect rule. Its TLS
 * context (key, certificate + issuing CA, root) is built once, as firmware loads it once.
 */
class HeldDevice {
  #client: MqttClient | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #stopped = false;
  /** Connection attempts so far. */
  attempts = 0;

  constructor(
    readonly id: string,
    private readonly url: string,
    private readonly context: SecureContext,
    private readonly events: { up(): void; failed(reason: string): void },
  ) {}

  connect(): void {
    if (this.#stopped) return;
    this.attempts++;
    const client = mqtt.connect(this.url, {
      clientId: this.id,
      secureContext: this.context,
      protocolVersion: 4,
      clean: true,
      keepalive: 60,
      reconnectPeriod: 0,
      connectTimeout: ANSWER_MS, // TLS + CONNECT -> CONNACK
    } as mqtt.IClientOptions);
    this.#client = client;
    const t = topicsOf(this.id);
    let subscribed = false;
    let reason = 'closed';
    // each SUBACK within 15 s too (§20), else this attempt failed
    let answer: NodeJS.Timeout | undefined;
    const giveUp = (why: string) => {
      reason = why;
      client.end(true);
    };
    client.on('error', (err) => void (reason = String((err as { code?: unknown }).code ?? err.message))); // the attempt then ends in 'close'
    client.once('connect', () => {
      answer = setTimeout(() => giveUp('suback timeout'), ANSWER_MS);
      client.subscribe(t.first, { qos: 1 }, (err, granted) => {
        if (err || granted?.some((g) => g.qos === 128)) return giveUp('subscription refused');
        clearTimeout(answer);
        answer = setTimeout(() => giveUp('suback timeout'), ANSWER_MS);
        client.subscribe(t.config, { qos: 1 }, (err2, granted2) => {
          clearTimeout(answer);
          if (err2 || granted2?.some((g) => g.qos === 128)) return giveUp('subscription refused');
          subscribed = true;
          this.#failures = 0;
          this.events.up();
        });
      });
    });
    client.once('close', () => {
      clearTimeout(answer);
      if (this.#client !== client) return;
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.end(true);
      this.#client = undefined;
      if (this.#stopped) return;
      if (!subscribed) this.events.failed(reason);
      // 1 s, 2 s, 4 s, ... after consecutive failures; a session that was up and broke counts as
      // none (#failures was reset when it came up), so the first retry is after 1 s
      this.#timer = setTimeout(() => this.connect(), backoffMs(this.#failures++));
    });
  }

  stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const client = this.#client;
    this.#client = undefined;
    return client ? new Promise((resolve) => client.end(true, {}, () => resolve())) : Promise.resolve();
  }
}

/** docs/protocol.md §20: 15 s for each answer. */
const ANSWER_MS = 15_000;

function topicsOf(id: string) {
  const p = `devices/${id}/`;
  return { first: ['state', 'errors', 'commands', 'csr/accepted', 'csr/rejected'].map((l) => p + l), config: p + 'config' };
}

/** Absolute milliseconds, comparable across threads. */
const now = () => performance.timeOrigin + performance.now();

interface Slice {
  url: string;
  rootPem: string;
  issuingPem: string;
  identities: Identity[];
  /** Index of this slice's first device in the whole fleet. */
  first: number;
}
type ToWorker = { cmd: 'connect'; inflight: number } | { cmd: 'resetAttempts' } | { cmd: 'report' } | { cmd: 'stop' };
type FromWorker =
  | { ev: 'ready' }
  | { ev: 'up'; i: number; at: number }
  | { ev: 'failed'; reason: string }
  | { ev: 'report'; maxAttempts: number }
  | { ev: 'stopped' };

/** A device thread: its slice of the fleet, each device on its own. */
function deviceThread(slice: Slice): void {
  const port = parentPort!;
  const post = (m: FromWorker) => port.postMessage(m);
  let upCount = 0;
  const devices = slice.identities.map(
    (d, k) =>
      new HeldDevice(d.id, slice.url, createSecureContext({ key: d.keyPem, cert: d.certPem + slice.issuingPem, ca: slice.rootPem }), {
        up: () => {
          upCount++;
          post({ ev: 'up', i: slice.first + k, at: now() });
        },
        failed: (reason) => post({ ev: 'failed', reason }),
      }),
  );
  port.on('message', (m: ToWorker) => {
    if (m.cmd === 'connect') {
      let launched = 0;
      const launcher = setInterval(() => {
        while (launched < devices.length && launched - upCount < m.inflight) devices[launched++]!.connect();
        if (launched === devices.length) clearInterval(launcher);
      }, 5);
    } else if (m.cmd === 'resetAttempts') {
      for (const d of devices) d.attempts = 0;
    } else if (m.cmd === 'report') {
      post({ ev: 'report', maxAttempts: Math.max(0, ...devices.map((d) => d.attempts)) });
    } else {
      void Promise.all(devices.map((d) => d.stop())).then(() => post({ ev: 'stopped' }));
    }
  });
  post({ ev: 'ready' });
}

if (!isMainThread && (workerData as { holdBench?: Slice } | undefined)?.holdBench) deviceThread((workerData as { holdBench: Slice }).holdBench);

/**
 * The simulated fleet on `threads` device threads (one per core by default: connecting 10,000
 * devices takes more than one core of TLS and MQTT work on the device side).
 */
class DeviceThreads {
  readonly upAt: Float64Array;
  readonly failures = new Map<string, number>();
  readonly #workers: Worker[];
  readonly #ready: Promise<unknown>;
  #waiting: ((m: FromWorker) => void)[] = [];

  constructor(identities: Identity[], base: Omit<Slice, 'identities' | 'first'>, threads: number) {
    this.upAt = new Float64Array(identities.length);
    const per = Math.ceil(identities.length / threads);
    const ready: Promise<void>[] = [];
    this.#workers = Array.from({ length: threads }, (_, t) => {
      const slice: Slice = { ...base, identities: identities.slice(t * per, (t + 1) * per), first: t * per };
      // this module again, through tsx's API: its loader (registered on the main thread) does not
      // reach worker threads under Node 20
      const load = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => tsx.tsImport(${JSON.stringify(import.meta.url)}, ${JSON.stringify(import.meta.url)}))`;
      const w = new Worker(load, { eval: true, workerData: { holdBench: slice } });
      ready.push(new Promise((resolve) => w.once('message', () => resolve())));
      w.on('message', (m: FromWorker) => {
        if (m.ev === 'ready') return;
        if (m.ev === 'up') this.upAt[m.i] = m.at;
        else if (m.ev === 'failed') this.failures.set(m.reason, (this.failures.get(m.reason) ?? 0) + 1);
        else this.#waiting.shift()?.(m);
      });
      w.on('error', (err) => {
        throw err;
      });
      return w;
    });
    this.#ready = Promise.all(ready);
  }

  get threads(): number {
    return this.#workers.length;
  }

  /** Devices connected and subscribed since `since` (absolute ms). */
  upSince(since: number): number {
    let n = 0;
    for (const at of this.upAt) if (at > since) n++;
    return n;
  }

  connect(inflight: number): void {
    const each = Math.max(1, Math.ceil(inflight / this.#workers.length));
    for (const w of this.#workers) w.postMessage({ cmd: 'connect', inflight: each } satisfies ToWorker);
  }

  resetAttempts(): void {
    for (const w of this.#workers) w.postMessage({ cmd: 'resetAttempts' } satisfies ToWorker);
  }

  /** Resolves once every thread has made its devices (keys and certificates loaded). */
  async ready(): Promise<void> {
    await this.#ready;
  }

  async #ask(cmd: 'report' | 'stop'): Promise<FromWorker[]> {
    return Promise.all(
      this.#workers.map((w) => {
        const answer = new Promise<FromWorker>((resolve) => this.#waiting.push(resolve));
        w.postMessage({ cmd } satisfies ToWorker);
        return answer;
      }),
    );
  }

  async maxAttempts(): Promise<number> {
    const answers = await this.#ask('report');
    return Math.max(...answers.map((a) => (a.ev === 'report' ? a.maxAttempts : 0)));
  }

  async stop(): Promise<void> {
    await this.#ask('stop');
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}

// ---- measurement -----------------------------------------------------------------------------

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
}

/** CPU seconds (user + system) of a process so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

const cpuOf = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = 2 ** 20;
const round1 = (x: number) => Math.round(x * 10) / 10;

/**
 * The service's heap, without a debug endpoint in the product: the bench preloads this module
 * into the service process (NODE_OPTIONS), which answers SIGUSR2 with process.memoryUsage()
 * after a full GC, written to a file.
 */
const PROBE = `import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { writeHeapSnapshot } from 'node:v8';
const file = process.env.HOLD_BENCH_PROBE_FILE;
const snapshots = process.env.HOLD_BENCH_HEAP_SNAPSHOT;
if (file) process.on('SIGUSR2', () => {
  globalThis.gc?.();
  if (snapshots) writeHeapSnapshot(snapshots + '/service-' + process.pid + '-' + Date.now() + '.heapsnapshot');
  writeFileSync(file, JSON.stringify(process.memoryUsage()));
});
const profiles = process.env.HOLD_BENCH_CPU_PROFILE;
if (profiles) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.start');
  process.on('exit', () => session.post('Profiler.stop', (err, r) => { if (!err) writeFileSync(profiles + '/service-' + process.pid + '.cpuprofile', JSON.stringify(r.profile)); }));
}
`;

async function probeMemory(p: ServiceProcess, file: string): Promise<NodeJS.MemoryUsage> {
  await rm(file, { force: true });
  process.kill(p.pid, 'SIGUSR2');
  for (let i = 0; i < 200; i++) {
    await sleep(50);
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text) return JSON.parse(text) as NodeJS.MemoryUsage;
  }
  throw new Error('the memory probe did not answer');
}

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export async function benchHold(devices = 10_000, threads = cpus().length): Promise<HoldResult> {
  const dir = await mkdtemp(join(tmpdir(), 'provisiond-hold-'));
  const probeFile = join(dir, 'memory.json');
  await writeFile(join(dir, 'probe.mjs'), PROBE);
  const admin = randomBytes(24).toString('base64url');
  const start = (ports?: { http: number; mqtt: number }) => {
    const saved = { NODE_OPTIONS: process.env.NODE_OPTIONS, HOLD_BENCH_PROBE_FILE: process.env.HOLD_BENCH_PROBE_FILE };
    process.env.NODE_OPTIONS = `${saved.NODE_OPTIONS ?? ''} --expose-gc --import file://${join(dir, 'probe.mjs')}`.trim();
    process.env.HOLD_BENCH_PROBE_FILE = probeFile;
    try {
      return startServiceProcess({
        name: 'hold',
        dataDir: join(dir, 'data'),
        startTimeoutMs: 60_000,
        settings: {
          adminApiKey: admin,
          logLevel: 'error',
          est: { enabled: false },
          // the fleet comes from one address with one installer key, and all of it at once after a
          // restart: the abuse limits (docs/operations.md "Limits") would measure themselves
          http: { rateLimitPerClientPerSecond: 0, rateLimitPerTenantPerSecond: 0, ...(ports ? { port: ports.http } : {}) },
          mqtt: { connectionRatePerAddressPerSecond: 0, connectionRatePerSecond: 0, ...(ports ? { port: ports.mqtt } : {}) },
        },
      });
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  };
  let service = await start();
  let fleet: DeviceThreads | undefined;
  try {
    const t0 = performance.now();
    const { identities, issuingPem } = await makeFleet(service, admin, devices);
    const setupSeconds = (performance.now() - t0) / 1000;
    const rootPem = await readFile(join(dir, 'data', 'ca', 'root.pem'), 'utf8');

    // a fresh process for the figures, without what making the identities left in this one
    const ports = { http: service.httpPort, mqtt: service.mqttPort };
    await service.stop();
    service = await start(ports);
    await sleep(1500);
    const rssEmpty = await rssBytes(service.pid);
    const memEmpty = await probeMemory(service, probeFile);

    // connect all, 200 handshakes in flight
    fleet = new DeviceThreads(
      identities,
      // the address rather than localhost, which every connection would resolve through getaddrinfo
      // (the broker's certificate names 127.0.0.1 too)
      { url: `mqtts://127.0.0.1:${service.mqttPort}`, rootPem, issuingPem },
      threads,
    );
    const devicesUp = fleet;
    await fleet.ready();
    const cpu0 = { service: await cpuSeconds(service.pid), devices: process.cpuUsage(), wall: performance.now() };
    devicesUp.connect(200);
    await waitFor('all devices connected', () => devicesUp.upSince(0) === devices, 300_000);
    const wall = (performance.now() - cpu0.wall) / 1000;
    const connectCpu = { service: (await cpuSeconds(service.pid)) - cpu0.service, devices: cpuOf(process.cpuUsage(cpu0.devices)), wall };
    if (fleet.failures.size > 0) throw new Error(`failed attempts while connecting: ${JSON.stringify(Object.fromEntries(fleet.failures))}`);

    await sleep(5000);
    const rssHeld = await rssBytes(service.pid);
    const mem = await probeMemory(service, probeFile);

    // broker restart on the same ports and data directory
    fleet.resetAttempts();
    await sleep(100);
    const tStop = now();
    const devicesCpu0 = process.cpuUsage();
    const exit = await service.stop(60_000);
    if (exit.code !== 0) throw new Error(`the service exited with ${JSON.stringify(exit)}: ${service.output().slice(-2000)}`);
    const stopMs = now() - tStop;
    service = await start(ports);
    const readyMs = now() - tStop;
    const serviceCpuReady = await cpuSeconds(service.pid);
    await waitFor('all devices back', () => devicesUp.upSince(tStop) === devices, 180_000);
    const reconnectCpu = { service: (await cpuSeconds(service.pid)) - serviceCpuReady, devices: cpuOf(process.cpuUsage(devicesCpu0)) };
    const back = Array.from(fleet.upAt, (at) => at - tStop).sort((a, b) => a - b);
    const curve = Array.from({ length: Math.ceil(back.at(-1)! / 5000) }, (_, i) => back.filter((t) => t <= (i + 1) * 5000).length);
    const maxAttempts = await fleet.maxAttempts();
    await sleep(5000);
    const rssAfter = await rssBytes(service.pid);
    const memAfter = await probeMemory(service, probeFile);

    return {
      devices,
      setupSeconds,
      rssEmptyMiB: round1(rssEmpty / MiB),
      rssHeldMiB: round1(rssHeld / MiB),
      rssPerDeviceKiB: round1((rssHeld - rssEmpty) / devices / 1024),
      heapUsedMiB: round1(mem.heapUsed / MiB),
      heapPerDeviceKiB: round1((mem.heapUsed - memEmpty.heapUsed) / devices / 1024),
      heapTotalMiB: round1(mem.heapTotal / MiB),
      rssHeldGcMiB: round1(mem.rss / MiB),
      deviceThreads: threads,
      connectsPerSecond: devices / wall,
      connectCpu,
      restart: {
        stopMs,
        readyMs,
        allBackMs: back.at(-1)!,
        p50Ms: back[Math.floor(back.length * 0.5)]!,
        p99Ms: back[Math.floor(back.length * 0.99)]!,
        maxAttempts,
        failedAttempts: Object.fromEntries(fleet.failures),
        cpu: reconnectCpu,
        curve,
        reconnected: back.length,
        rssAfterMiB: round1(rssAfter / MiB),
        rssAfterGcMiB: round1(memAfter.rss / MiB),
        heapUsedAfterMiB: round1(memAfter.heapUsed / MiB),
        heapTotalAfterMiB: round1(memAfter.heapTotal / MiB),
      },
    };
  } finally {
    await fleet?.stop();
    await service.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

export function printHold(r: HoldResult): void {
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const line = (label: string, value: string, rest = '') => console.log(`${label.padEnd(34)}${value.padStart(10)}   ${rest}`.trimEnd());
  const x = r.restart;
  console.log(`held fleet (${r.devices} devices over mutual TLS; provisiond in its own process, SQLite; the devices on ${r.deviceThreads} threads of the bench process; ${cpus().length} cores for both)`);
  line('  identities (import, issue, claim)', s(r.setupSeconds * 1000));
  line('  connect + subscribe', `${r.connectsPerSecond.toFixed(0)} /s`, `CPU: service ${r.connectCpu.service.toFixed(1)} s, devices ${r.connectCpu.devices.toFixed(1)} s in ${r.connectCpu.wall.toFixed(1)} s`);
  line('  provisiond RSS, empty', `${r.rssEmptyMiB.toFixed(1)} MiB`);
  line(`  provisiond RSS, ${r.devices} held`, `${r.rssHeldMiB.toFixed(1)} MiB`, `after a full GC ${r.rssHeldGcMiB} MiB; JS heap used ${r.heapUsedMiB} of ${r.heapTotalMiB} MiB (${r.heapPerDeviceKiB} KiB per device)`);
  line('  RSS per held device', `${r.rssPerDeviceKiB.toFixed(1)} KiB`);
  console.log('  broker restart (SIGTERM, then a new process on the same ports; devices retry 1 s doubling to 60 s, ±20 % jitter)');
  line('    old process gone', s(x.stopMs));
  line('    new process ready', s(x.readyMs));
  line(`    all ${x.reconnected} back`, s(x.allBackMs), `p50 ${s(x.p50Ms)}, p99 ${s(x.p99Ms)}; at most ${x.maxAttempts} attempts per device`);
  line('    back at 5 s, 10 s, ...', '', x.curve.join(' '));
  line('    failed attempts', '', Object.entries(x.failedAttempts).map(([k, v]) => `${v} ${k}`).join(', ') || 'none');
  line('    CPU until all back', '', `service ${x.cpu.service.toFixed(1)} s (from its ready line), devices ${x.cpu.devices.toFixed(1)} s`);
  line('    provisiond RSS, all back', `${x.rssAfterMiB.toFixed(1)} MiB`, `after a full GC ${x.rssAfterGcMiB} MiB; JS heap used ${x.heapUsedAfterMiB} of ${x.heapTotalAfterMiB} MiB`);
}

if (isMainThread && import.meta.url === `file://${process.argv[1]}`) {
  printHold(await benchHold(Number(process.argv[2] ?? 10_000), Number(process.argv[3] ?? cpus().length)));
}
