/**
 * The fleet runner: registers N devices (factory key), claims each (installer key) and runs a
 * simulated device per claim, at a bounded concurrency or an arrival rate. Hubs onboard their
 * children over their own connection. Optionally the provisioned fleet is held connected, sending
 * telemetry, while chaos happens (connections cut, factory resets, devices that never acknowledge).
 * Uses only the HTTP API and the MQTT protocol, like a real deployment's devices and tools would.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClaimResponse, NetworkSettings } from '../../schemas/types.js';
import { SimDevice, type SimDeviceOptions } from '../device.js';
import { SimHub } from '../hub.js';
import { MODELS, type ModelName } from '../models.js';
import { DEFAULT_NETWORK, api, errorCode, percentile } from './http.js';
import { MODEL_NAMES, assignModels, formatMix, parseMix, planFleet, rng, type Mix } from './plan.js';
import { buildLoadReport, type LoadReport, type RunFacts } from './report.js';
import { StageHistograms, TimeSeries, type Stage } from './stats.js';

export interface FleetOptions {
  apiUrl: string;
  factoryKey: string;
  installerKey: string;
  /** Devices provisioned directly (hub children come on top). */
  devices: number;
  /** At most this many devices provisioning at once (default 20, or unbounded with `rate`). */
  concurrency?: number;
  /** Devices started per second (open loop); with `concurrency` as well, also at most that many in flight. */
  rate?: number;
  /** Models in turn (the original option); `mix` wins when both are given. Default thermostat, camera. */
  models?: ModelName[];
  /** Weights per model, e.g. "thermostat:6,camera:3,hub:1" or { thermostat: 6, camera: 3, hub: 1 }. */
  mix?: Mix | string;
  /** Children each hub onboards through SimHub.onboard (default 2). */
  childrenPerHub?: number;
  /** Device id prefix; a random run id is added so runs never collide. */
  prefix?: string;
  network?: NetworkSettings;
  owner?: string;
  site?: string;
  /** Keep every held device connected until stop() of the returned fleet. */
  hold?: boolean;
  /**
   * Hold the fleet connected for this long after the last device finished provisioning (telemetry,
   * connection drops), then disconnect every device (unless `hold` keeps them for stop()).
   */
  holdSeconds?: number;
  /** Keep-alive telemetry from held devices (default: on when holdSeconds > 0). */
  telemetry?: boolean;
  /** Telemetry period per model instead of models.ts's. */
  telemetryIntervalMs?: Partial<Record<ModelName, number>>;
  /** Fraction of (non-hub) devices that never acknowledge their configuration (stay "configuring"). */
  neverAckFraction?: number;
  /** Fraction of (non-hub) devices that do a factory reset once provisioned and are re-provisioned. */
  factoryResetFraction?: number;
  /** Fraction of (non-hub) held devices whose connection is cut once, at a random time of the hold; they reconnect. */
  dropFraction?: number;
  /**
   * Register the devices (hubs excepted) before the clock starts, through the factory line's bulk
   * import (POST /v1/devices/import, 1,000 per request), as a factory does long before an installer
   * claims: the run then times claim -> provisioned only. Default: each device is registered on
   * its own (POST /v1/devices) as part of its run.
   */
  preRegister?: boolean;
  /** Local addresses of the MQTT connections, used in turn (e.g. 127.0.0.1 .. 127.0.0.N). */
  sourceAddresses?: string[];
  /** How long a device waits for each answer (default 15 s). */
  timeoutMs?: number;
  /** Seed of the chaos plan (random when absent; the report names it). */
  seed?: number;
  onProgress?: (progress: FleetProgress) => void;
}

export interface FleetProgress {
  phase: 'provisioning' | 'holding';
  /** Devices (not children) finished, whatever the outcome. */
  done: number;
  total: number;
  /** Errors so far (devices, children, reconnects). */
  failed: number;
  provisioned: number;
  neverAck: number;
  inFlight: number;
  held: number;
  elapsedMs: number;
  holdElapsedMs: number;
  holdMs: number;
  drops: number;
  reconnects: number;
  telemetryMessages: number;
}

export type DeviceOutcome = 'provisioned' | 'never-ack' | 'failed';

export interface DeviceResult {
  deviceId: string;
  model: ModelName;
  /** Provisioned (and still so at the end of the run). */
  ok: boolean;
  outcome?: DeviceOutcome;
  /** Where a failed device stopped: register, claim, csrToCert, configToAck, hubChild, reprovision, reconnect. */
  stage?: string;
  error?: string;
  /** The hub that onboarded this device. */
  hubId?: string;
  /** The claim request (HTTP), or the hub's claim for a child. */
  claimMs?: number;
  /** Bootstrap connection, CSR, certificate received and checked. */
  identityMs?: number;
  /** Mutual-TLS connection, configuration, acknowledgement, "provisioned". */
  configMs?: number;
  /** From the claim request to "provisioned". */
  totalMs?: number;
  /** Factory reset: the reprovision request to "provisioned" again. */
  reprovisionMs?: number;
}

export interface FleetReport {
  /** Devices and hub children. */
  total: number;
  provisioned: number;
  failed: number;
  /** Devices that never acknowledged (by design of the run): neither provisioned nor failed. */
  neverAck: number;
  /** The provisioning phase (the hold is not included). */
  wallMs: number;
  devicesPerSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
  errors: Record<string, number>;
  results: DeviceResult[];
}

export interface RunningFleet {
  report: FleetReport;
  /** The full measurement: per-stage HDR percentiles, per-second series, errors (docs/performance.md). */
  load: LoadReport;
  /** Devices still connected (with `hold`). */
  devices: SimDevice[];
  stop(): Promise<void>;
}

/** A counting semaphore for the in-flight bound. */
function semaphore(limit: number) {
  let free = limit;
  const waiting: Array<() => void> = [];
  return {
    acquire: async () => {
      if (free > 0) {
        free--;
        return;
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
    },
    release: () => {
      const next = waiting.shift();
      if (next) next();
      else free++;
    },
  };
}

export async function runFleet(opts: FleetOptions): Promise<RunningFleet> {
  const startedAt = new Date();
  const seed = opts.seed ?? randomInt(2 ** 31);
  const runId = randomBytes(3).toString('hex');
  const prefix = `${opts.prefix ?? 'sim'}-${runId}`;
  const mix = typeof opts.mix === 'string' ? parseMix(opts.mix) : opts.mix;
  const roundRobin = opts.models ?? ['thermostat', 'camera'];
  const models = mix ? assignModels(opts.devices, mix) : Array.from({ length: opts.devices }, (_, i) => roundRobin[i % roundRobin.length]!);
  const holdMs = Math.max(0, (opts.holdSeconds ?? 0) * 1000);
  const holding = opts.hold === true || holdMs > 0;
  const plan = planFleet({
    devices: opts.devices,
    models,
    neverAckFraction: opts.neverAckFraction,
    factoryResetFraction: opts.factoryResetFraction,
    dropFraction: opts.dropFraction,
    holding: holdMs > 0,
    seed,
  });
  const random = rng(seed ^ 0x5bd1e995);
  const childrenPerHub = Math.max(0, opts.childrenPerHub ?? 2);
  const childModels = MODEL_NAMES.filter((m) => m !== 'hub' && (mix ? (mix[m] ?? 0) > 0 : roundRobin.includes(m)));
  if (childModels.length === 0) childModels.push('thermostat');
  const hubs = models.filter((m) => m === 'hub').length;
  const telemetryOn = opts.telemetry ?? holdMs > 0;
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const concurrency = opts.concurrency ?? (opts.rate ? Number.POSITIVE_INFINITY : 20);
  const addresses = opts.sourceAddresses?.length ? opts.sourceAddresses : undefined;
  const owner = opts.owner ?? 'demo-owner';
  const site = opts.site ?? 'demo-site';

  const prefixOf = (i: number, model: ModelName) => `${prefix}-${model}-${String(i).padStart(5, '0')}`;
  const claimCodes = new Map<number, string>();
  if (opts.preRegister) {
    const rows = models.flatMap((model, i) => (model === 'hub' ? [] : [{ id: prefixOf(i, model), model, claimCode: randomBytes(12).toString('base64url'), i }]));
    for (let at = 0; at < rows.length; at += 1000) {
      const batch = rows.slice(at, at + 1000);
      await api(opts.apiUrl, opts.factoryKey, 'POST', '/v1/devices/import?mode=atomic', { devices: batch.map(({ i: _i, ...row }) => row) });
      for (const row of batch) claimCodes.set(row.i, row.claimCode);
    }
  }

  const t0 = performance.now();
  const series = new TimeSeries(t0);
  const hist = new StageHistograms();
  const results: DeviceResult[] = [];
  const held = new Set<SimDevice>();
  const everHeld = new Set<SimDevice>();
  const errors = new Map<string, { code: string; stage: string; count: number; example: string }>();
  const cutAt = new Map<SimDevice, number>();
  const dropTimers = new Set<NodeJS.Timeout>();
  const reconnecting = new Set<Promise<void>>();
  const abort = new AbortController();
  const c = { done: 0, inFlight: 0, peakInFlight: 0, peakHeld: 0, drops: 0, reconnects: 0, reconnectFailures: 0, unexpectedDisconnects: 0, reprovisioned: 0, errors: 0 };
  let phase: FleetProgress['phase'] = 'provisioning';
  let holdStart = 0;
  let watching = holdMs > 0;

  const record = (stage: Stage, valueMs: number) => {
    hist.record(stage, valueMs);
    series.latency(stage, valueMs);
  };
  const addError = (stage: string, err: unknown) => {
    const code = errorCode(err);
    const key = `${stage}\u0000${code}`;
    const e = errors.get(key) ?? { code, stage, count: 0, example: (err instanceof Error ? err.message : String(err)).slice(0, 200) };
    e.count++;
    errors.set(key, e);
    c.errors++;
  };
  const fail = (result: DeviceResult, stage: string, err: unknown) => {
    result.ok = false;
    result.outcome = 'failed';
    result.stage = stage;
    result.error = errorCode(err);
    addError(stage, err);
    series.count('failed');
  };
  const connectedHeld = () => {
    let n = 0;
    for (const d of held) if (d.client?.connected) n++;
    return n;
  };
  const telemetryTotals = () => {
    let messages = 0;
    let bytes = 0;
    for (const d of everHeld) {
      messages += d.telemetrySent;
      bytes += d.telemetryBytes;
    }
    return { messages, bytes };
  };
  const count = (outcome: DeviceOutcome) => results.reduce((n, r) => n + (r.outcome === outcome ? 1 : 0), 0);
  const progress = () => {
    if (!opts.onProgress) return;
    const now = performance.now();
    opts.onProgress({
      phase,
      done: c.done,
      total: opts.devices,
      failed: c.errors,
      provisioned: count('provisioned'),
      neverAck: count('never-ack'),
      inFlight: c.inFlight,
      held: connectedHeld(),
      elapsedMs: now - t0,
      holdElapsedMs: holdStart ? now - holdStart : 0,
      holdMs,
      drops: c.drops,
      reconnects: c.reconnects,
      telemetryMessages: telemetryTotals().messages,
    });
  };
  const sampler = setInterval(() => {
    const t = telemetryTotals();
    const heldNow = connectedHeld();
    c.peakHeld = Math.max(c.peakHeld, heldNow);
    series.sample({ inFlight: c.inFlight, held: heldNow, telemetryMessages: t.messages, telemetryBytes: t.bytes });
    if (phase === 'holding') progress();
  }, 250);
  sampler.unref();

  const deviceOptions = (deviceId: string, model: ModelName, i: number, bootstrap: ClaimResponse['bootstrap']): SimDeviceOptions => ({
    deviceId,
    model,
    bootstrap,
    timeoutMs,
    ...(telemetryOn ? { telemetryIntervalMs: opts.telemetryIntervalMs?.[model] ?? MODELS[model].telemetryIntervalMs } : {}),
    ...(plan.neverAck.has(i) ? { broken: true } : {}),
    ...(addresses ? { localAddress: addresses[i % addresses.length]! } : {}),
  });

  /** Reconnects after a lost connection (cut by the chaos, or by anything else) with back-off. */
  const reconnect = (device: SimDevice, since: number) => {
    const run = (async () => {
      let last: unknown;
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          await sleep(200 * 2 ** attempt + random() * 200, undefined, { signal: abort.signal });
          await device.reconnect();
          const ms = performance.now() - since;
          record('reconnect', ms);
          series.count('reconnects');
          c.reconnects++;
          cutAt.delete(device);
          watch(device);
          return;
        } catch (err) {
          if (abort.signal.aborted) return;
          last = err;
        }
      }
      c.reconnectFailures++;
      held.delete(device);
      const result = results.find((r) => r.deviceId === device.deviceId);
      if (result) fail(result, 'reconnect', last);
      else addError('reconnect', last);
      await device.stop().catch(() => undefined);
    })();
    reconnecting.add(run);
    void run.finally(() => reconnecting.delete(run));
  };

  /** Notices when a held device's connection goes away. */
  const watch = (device: SimDevice) => {
    const client = device.client;
    if (!watching || !client) return;
    client.once('close', () => {
      if (!watching || abort.signal.aborted || device.client !== client || !held.has(device)) return;
      const since = cutAt.get(device);
      if (since === undefined) c.unexpectedDisconnects++;
      reconnect(device, since ?? performance.now());
    });
  };

  const cut = (device: SimDevice) => {
    const client = device.client;
    if (abort.signal.aborted || !held.has(device) || !client?.connected) return;
    c.drops++;
    series.count('drops');
    cutAt.set(device, performance.now());
    client.stream.destroy(); // as if the network went away: no DISCONNECT, no FIN from MQTT
  };

  const hold = (device: SimDevice, i: number) => {
    held.add(device);
    everHeld.add(device);
    watch(device);
    if (plan.drop.has(i) && holdMs > 0) {
      const timer = setTimeout(() => {
        dropTimers.delete(timer);
        cut(device);
      }, random() * holdMs);
      dropTimers.add(timer);
    }
  };

  const onboardChild = async (hub: SimHub, hubIndex: number, k: number) => {
    const model = childModels[(hubIndex + k) % childModels.length]!;
    const result: DeviceResult = { deviceId: `${hub.deviceId}-c${k + 1}`, model, ok: false, hubId: hub.deviceId };
    results.push(result);
    series.count('started');
    try {
      const claimCode = randomBytes(12).toString('base64url');
      await api(opts.apiUrl, opts.factoryKey, 'POST', '/v1/devices', { id: result.deviceId, model, claimCode });
      const { timings } = await hub.onboard({ deviceId: result.deviceId, model, claimCode }, timeoutMs);
      Object.assign(result, { claimMs: timings.claimMs, identityMs: timings.identityMs, configMs: timings.configMs, totalMs: timings.totalMs });
      record('claim', timings.claimMs);
      record('csrToCert', timings.identityMs);
      record('configToAck', timings.configMs);
      record('total', timings.totalMs);
      result.ok = true;
      result.outcome = 'provisioned';
      series.count('provisioned');
      series.count('children');
    } catch (err) {
      fail(result, 'hubChild', err);
    }
  };

  const one = async (i: number): Promise<void> => {
    const model = models[i]!;
    const deviceId = prefixOf(i, model);
    const result: DeviceResult = { deviceId, model, ok: false };
    results.push(result);
    series.count('started');
    c.inFlight++;
    c.peakInFlight = Math.max(c.peakInFlight, c.inFlight);
    let stage = 'register';
    let device: SimDevice | undefined;
    try {
      let claimCode = claimCodes.get(i);
      if (claimCode === undefined) {
        claimCode = randomBytes(12).toString('base64url');
        await api(opts.apiUrl, opts.factoryKey, 'POST', '/v1/devices', { id: deviceId, model, claimCode, ...(model === 'hub' ? { hub: true } : {}) });
      }
      stage = 'claim';
      const c0 = performance.now();
      const claim = await api<ClaimResponse>(opts.apiUrl, opts.installerKey, 'POST', '/v1/claims', {
        claimCode,
        deviceId,
        owner,
        site,
        network: opts.network ?? DEFAULT_NETWORK,
      });
      result.claimMs = performance.now() - c0;
      record('claim', result.claimMs);

      stage = 'csrToCert';
      const dOpts = deviceOptions(deviceId, model, i, claim.bootstrap);
      device = model === 'hub' ? new SimHub(dOpts) : new SimDevice(dOpts);
      const e0 = performance.now();
      await device.enroll();
      result.identityMs = performance.now() - e0;
      record('csrToCert', result.identityMs);

      stage = 'configToAck';
      const k0 = performance.now();
      await device.configure();
      if (plan.neverAck.has(i)) {
        // it has its configuration (the service marks it "configuring") and never acknowledges it
        await device.waitForConfig(timeoutMs);
        result.outcome = 'never-ack';
        series.count('neverAck');
      } else {
        result.configMs = performance.now() - k0;
        result.totalMs = result.claimMs + result.identityMs + result.configMs;
        record('configToAck', result.configMs);
        record('total', result.totalMs);
        result.ok = true;
        result.outcome = 'provisioned';
        series.count('provisioned');
      }

      if (device instanceof SimHub) {
        for (let k = 0; k < childrenPerHub; k++) await onboardChild(device, i, k);
      }

      if (plan.factoryReset.has(i)) {
        stage = 'reprovision';
        await device.stop(); // key, certificate and configuration are gone: the device is offline
        const r0 = performance.now();
        const again = await api<ClaimResponse>(opts.apiUrl, opts.installerKey, 'POST', `/v1/devices/${encodeURIComponent(deviceId)}/reprovision`);
        await device.factoryReset(again.bootstrap);
        await device.run();
        result.reprovisionMs = performance.now() - r0;
        record('reprovision', result.reprovisionMs);
        series.count('reprovisioned');
        c.reprovisioned++;
      }

      if (holding) hold(device, i);
      else await device.stop();
    } catch (err) {
      fail(result, stage, err);
      await device?.stop().catch(() => undefined);
    } finally {
      c.inFlight--;
      c.done++;
      progress();
    }
  };

  // arrivals: at a rate (open loop, optionally capped) or a fixed number in flight
  const slots = semaphore(concurrency);
  if (opts.rate && opts.rate > 0) {
    const tasks: Promise<void>[] = [];
    for (let i = 0; i < opts.devices; i++) {
      const wait = t0 + (i / opts.rate) * 1000 - performance.now();
      if (wait > 0) await sleep(wait);
      await slots.acquire();
      tasks.push(one(i).finally(slots.release));
    }
    await Promise.all(tasks);
  } else {
    let next = 0;
    const workers = Array.from({ length: Math.max(1, Math.min(Number.isFinite(concurrency) ? concurrency : opts.devices, opts.devices)) }, async () => {
      while (next < opts.devices) await one(next++);
    });
    await Promise.all(workers);
  }
  const provisioningMs = performance.now() - t0;

  // hold: telemetry flows, drops happen and are recovered
  if (holdMs > 0) {
    phase = 'holding';
    holdStart = performance.now();
    progress();
    await sleep(holdMs);
    // a reconnect under way gets its chance to finish (it has its own attempts and back-off)
    const deadline = performance.now() + timeoutMs;
    while (reconnecting.size > 0 && performance.now() < deadline) await Promise.race([Promise.allSettled([...reconnecting]), sleep(100)]);
  }
  const holdEnd = performance.now();
  watching = false;
  abort.abort();
  for (const t of dropTimers) clearTimeout(t);
  clearInterval(sampler);
  const final = telemetryTotals();
  series.sample({ inFlight: 0, held: connectedHeld(), telemetryMessages: final.messages, telemetryBytes: final.bytes }, holdEnd);

  const live = [...held];
  if (!opts.hold) await Promise.all(live.splice(0).map((d) => d.stop().catch(() => undefined)));
  held.clear();

  results.sort((a, b) => a.deviceId.localeCompare(b.deviceId));
  const ok = results.filter((r) => r.ok);
  const totals = ok.map((r) => r.totalMs!).sort((a, b) => a - b);
  const errorCounts: Record<string, number> = {};
  for (const r of results) if (r.error) errorCounts[r.error] = (errorCounts[r.error] ?? 0) + 1;
  const report: FleetReport = {
    total: results.length,
    provisioned: ok.length,
    failed: results.filter((r) => r.outcome === 'failed').length,
    neverAck: results.filter((r) => r.outcome === 'never-ack').length,
    wallMs: Math.round(provisioningMs),
    devicesPerSecond: Math.round((ok.length / (provisioningMs / 1000)) * 10) / 10,
    latencyMs: { p50: Math.round(percentile(totals, 50)), p99: Math.round(percentile(totals, 99)), max: Math.round(totals.at(-1) ?? 0) },
    errors: errorCounts,
    results,
  };

  const facts: RunFacts = {
    startedAt,
    finishedAt: new Date(),
    apiUrl: opts.apiUrl,
    options: {
      devices: opts.devices,
      ...(opts.rate ? { rate: opts.rate } : {}),
      ...(Number.isFinite(concurrency) ? { concurrency } : {}),
      mix: mix ? formatMix(mix) : roundRobin.join(','),
      childrenPerHub,
      holdSeconds: holdMs / 1000,
      telemetry: telemetryOn,
      neverAckFraction: opts.neverAckFraction ?? 0,
      factoryResetFraction: opts.factoryResetFraction ?? 0,
      dropFraction: opts.dropFraction ?? 0,
      sourceAddresses: addresses ?? [],
      preRegistered: claimCodes.size,
      timeoutMs,
      seed,
      runId: prefix,
    },
    planned: { hubs, children: hubs * childrenPerHub, neverAck: plan.neverAck.size, factoryResets: plan.factoryReset.size, drops: plan.drop.size },
    results,
    provisioningMs,
    holdMs: holdStart ? holdEnd - holdStart : 0,
    wallMs: holdEnd - t0,
    counters: {
      drops: c.drops,
      reconnects: c.reconnects,
      reconnectFailures: c.reconnectFailures,
      unexpectedDisconnects: c.unexpectedDisconnects,
      reprovisioned: c.reprovisioned,
      peakInFlight: c.peakInFlight,
      peakHeld: c.peakHeld,
      telemetryMessages: final.messages,
      telemetryBytes: final.bytes,
    },
    histograms: hist,
    series: series.buckets(),
    errors: [...errors.values()].sort((a, b) => b.count - a.count || a.code.localeCompare(b.code)),
  };
  const load = buildLoadReport(facts);
  hist.destroy();

  return {
    report,
    load,
    devices: live,
    stop: async () => {
      await Promise.all(live.splice(0).map((d) => d.stop()));
    },
  };
}
