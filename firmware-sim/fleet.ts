/**
 * The fleet runner: registers N devices (factory key), claims each (installer key) and runs a
 * simulated device per claim, with bounded concurrency. Uses only the HTTP API and the MQTT
 * protocol, like a real deployment's devices and tools would.
 */
import { randomBytes } from 'node:crypto';
import type { ClaimResponse, ErrorBody, NetworkSettings } from '../schemas/types.js';
import { SimDevice } from './device.js';
import type { ModelName } from './models.js';

export interface FleetOptions {
  apiUrl: string;
  factoryKey: string;
  installerKey: string;
  devices: number;
  concurrency: number;
  models?: ModelName[];
  /** Device id prefix; a random run id is added so runs never collide. */
  prefix?: string;
  network?: NetworkSettings;
  owner?: string;
  site?: string;
  /** Keep every provisioned device connected until stop() of the returned fleet. */
  hold?: boolean;
  onProgress?: (progress: { done: number; failed: number; total: number }) => void;
}

export interface DeviceResult {
  deviceId: string;
  model: ModelName;
  ok: boolean;
  error?: string;
  /** Register + claim over HTTP. */
  claimMs?: number;
  identityMs?: number;
  configMs?: number;
  /** From the claim request to "provisioned". */
  totalMs?: number;
}

export interface FleetReport {
  total: number;
  provisioned: number;
  failed: number;
  wallMs: number;
  devicesPerSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
  errors: Record<string, number>;
  results: DeviceResult[];
}

export const DEFAULT_NETWORK: NetworkSettings = {
  wifi: { ssid: 'provisiond-demo', security: 'wpa2-psk', secret: 'demo-passphrase-123' },
  ipv4: { mode: 'dhcp' },
  ntp: ['pool.ntp.org'],
};

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody | undefined,
  ) {
    super(`${status} ${body?.code ?? ''} ${body?.message ?? ''}`.trim());
  }
  get code(): string {
    return this.body?.code ?? `HTTP_${this.status}`;
  }
}

export async function api<T>(base: string, key: string, method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  const parsed = text ? (JSON.parse(text) as unknown) : undefined;
  if (!res.ok) throw new ApiError(res.status, parsed as ErrorBody | undefined);
  return parsed as T;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export interface RunningFleet {
  report: FleetReport;
  devices: SimDevice[];
  stop(): Promise<void>;
}

export async function runFleet(opts: FleetOptions): Promise<RunningFleet> {
  const models = opts.models ?? ['thermostat', 'camera'];
  const runId = randomBytes(3).toString('hex');
  const prefix = `${opts.prefix ?? 'sim'}-${runId}`;
  const results: DeviceResult[] = [];
  const live: SimDevice[] = [];
  let next = 0;
  let done = 0;
  let failed = 0;
  const t0 = performance.now();

  const one = async (i: number): Promise<void> => {
    const model = models[i % models.length]!;
    const deviceId = `${prefix}-${model}-${String(i).padStart(5, '0')}`;
    const result: DeviceResult = { deviceId, model, ok: false };
    let device: SimDevice | undefined;
    try {
      const claimCode = randomBytes(12).toString('base64url');
      await api(opts.apiUrl, opts.factoryKey, 'POST', '/v1/devices', { id: deviceId, model, claimCode });
      const c0 = performance.now();
      const claim = await api<ClaimResponse>(opts.apiUrl, opts.installerKey, 'POST', '/v1/claims', {
        claimCode,
        deviceId,
        owner: opts.owner ?? 'demo-owner',
        site: opts.site ?? 'demo-site',
        network: opts.network ?? DEFAULT_NETWORK,
      });
      result.claimMs = performance.now() - c0;
      device = new SimDevice({ deviceId, model, bootstrap: claim.bootstrap });
      const t = await device.run();
      result.identityMs = t.identityMs;
      result.configMs = t.configMs;
      result.totalMs = result.claimMs + t.totalMs;
      result.ok = true;
      if (opts.hold) live.push(device);
      else await device.stop();
    } catch (err) {
      result.error = (err as { code?: string }).code ?? (err as Error).message;
      failed++;
      await device?.stop().catch(() => undefined);
    }
    results.push(result);
    done++;
    opts.onProgress?.({ done, failed, total: opts.devices });
  };

  const workers = Array.from({ length: Math.min(opts.concurrency, opts.devices) }, async () => {
    while (next < opts.devices) await one(next++);
  });
  await Promise.all(workers);
  const wallMs = performance.now() - t0;
  const totals = results.filter((r) => r.ok).map((r) => r.totalMs!).sort((a, b) => a - b);
  const errors: Record<string, number> = {};
  for (const r of results) if (r.error) errors[r.error] = (errors[r.error] ?? 0) + 1;
  results.sort((a, b) => a.deviceId.localeCompare(b.deviceId));
  const report: FleetReport = {
    total: opts.devices,
    provisioned: totals.length,
    failed,
    wallMs: Math.round(wallMs),
    devicesPerSecond: Math.round((totals.length / (wallMs / 1000)) * 10) / 10,
    latencyMs: { p50: Math.round(percentile(totals, 50)), p99: Math.round(percentile(totals, 99)), max: Math.round(totals.at(-1) ?? 0) },
    errors,
    results,
  };
  return {
    report,
    devices: live,
    stop: async () => {
      await Promise.all(live.splice(0).map((d) => d.stop()));
    },
  };
}
