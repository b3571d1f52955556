/**
 * End to end: devices fully provisioned per second (claim, bootstrap session, CSR, certificate,
 * mutual-TLS session, signed configuration, acknowledgement -> "provisioned") and the p50/p99
 * latency at 80 % of that peak, against the bare mutual-TLS connect + QoS 1 publish + close rate of
 * the same client stack (mqtt.js) against the same broker, measured in the same run.
 *
 * provisiond runs in its own process (`provisiond start`, SQLite store) as it is deployed; the
 * simulated devices (firmware-sim, one process) and the baseline client share this machine's cores
 * with it. Devices are registered beforehand through the factory line's bulk import (a factory
 * does that long before an installer claims), so the clock covers claim -> provisioned. A device
 * needs two TLS handshakes (bootstrap, then mutual TLS), so 0.5 of the bare rate is the limit.
 *
 *   npx tsx bench/e2e.ts [devices per step] [concurrency list]     default 1000 80,160,240
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { percentile, runFleet, type FleetOptions } from '../firmware-sim/index.js';
import { createRoleKeys, startServiceProcess, type ServiceProcess } from '../test/helpers/process.js';

export interface E2eStep {
  concurrency?: number;
  rate?: number;
  devices: number;
  provisionedPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  failed: number;
  /** CPU time per device: the service process, and this process (the simulated devices). */
  serviceCpuMs: number;
  clientCpuMs: number;
}

export interface E2eResult {
  devices: number;
  sweep: E2eStep[];
  peak: E2eStep;
  atEightyPercent: E2eStep;
  bare: { connectsPerSecond: number; serviceCpuMs: number; clientCpuMs: number; runs: number[] };
  ratio: number;
}

/** CPU time (user + system, ms) a process has used so far, from /proc (Linux). */
async function processCpuMs(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // clock ticks of 1/100 s
}

async function measured<T>(service: ServiceProcess, n: number, fn: () => Promise<T>) {
  const s0 = await processCpuMs(service.pid);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { value, wallMs, serviceCpuMs: ((await processCpuMs(service.pid)) - s0) / n, clientCpuMs: (c.user + c.system) / 1000 / n };
}

export async function benchE2e(devices = 1000, concurrencies: number[] = [80, 160, 240]): Promise<E2eResult> {
  const dataDir = await mkdtemp(join(tmpdir(), 'provisiond-bench-e2e-'));
  const admin = `bench-admin-${Math.random().toString(36).slice(2)}-key-long-enough`;
  // the load comes from one address and one installer key: the abuse limits would measure themselves
  const unlimited = { http: { rateLimitPerClientPerSecond: 0, rateLimitPerTenantPerSecond: 0 }, mqtt: { connectionRatePerAddressPerSecond: 0, connectionRatePerSecond: 0 } };
  const service = await startServiceProcess({ name: 'bench', dataDir, settings: { adminApiKey: admin, logLevel: 'error', est: { enabled: false }, ...unlimited } });
  try {
    const keys = await createRoleKeys(service, admin);
    const base: FleetOptions = { apiUrl: service.httpUrl, factoryKey: keys.factory, installerKey: keys.installer, devices, hold: false, preRegister: true };
    const step = async (opts: { concurrency?: number; rate?: number; n?: number }): Promise<E2eStep> => {
      const n = opts.n ?? devices;
      const m = await measured(service, n, () => runFleet({ ...base, devices: n, ...opts }));
      const r = m.value.report;
      const totals = r.results.filter((x) => x.ok).map((x) => x.totalMs!).sort((a, b) => a - b);
      return {
        ...opts,
        devices: n,
        provisionedPerSecond: r.provisioned / (r.wallMs / 1000),
        p50Ms: percentile(totals, 50),
        p99Ms: percentile(totals, 99),
        failed: r.failed,
        serviceCpuMs: m.serviceCpuMs,
        clientCpuMs: m.clientCpuMs,
      };
    };

    // Baseline credentials: provisioned devices (their keys and certificates), one per connection in flight.
    const bareConcurrencies = [40, 160];
    const few = await runFleet({ ...base, devices: Math.max(...bareConcurrencies), concurrency: 40, hold: true });
    const creds = few.devices.map((d) => ({ id: d.deviceId, key: d.keyPem, cert: d.certificatePem }));
    await few.stop();
    const rootPem = (await service.request('GET', '/v1/ca/root.pem')).text;
    const bareRun = (inFlight: number) =>
      measured(service, devices, async () => {
        let next = 0;
        await Promise.all(
          creds.slice(0, inFlight).map(async (c) => {
            while (next++ < devices) {
              const client = await mqtt.connectAsync(service.mqttUrl, { clientId: c.id, key: c.key, cert: c.cert, ca: rootPem, reconnectPeriod: 0, protocolVersion: 4 });
              // the same socket setting as the simulated devices (TCP_NODELAY)
              (client.stream as { setNoDelay?: (noDelay: boolean) => void }).setNoDelay?.(true);
              await client.publishAsync(`devices/${c.id}/telemetry`, '{"t":1}', { qos: 1 });
              await client.endAsync();
            }
          }),
        );
      });

    await step({ concurrency: 20, n: 100 }); // warm-up (JIT, SQLite pages)
    const bareRuns = [];
    for (const inFlight of bareConcurrencies) bareRuns.push(await bareRun(inFlight));
    const sweep: E2eStep[] = [];
    for (const concurrency of concurrencies) sweep.push(await step({ concurrency }));
    for (const inFlight of bareConcurrencies) bareRuns.push(await bareRun(inFlight));
    // the fastest baseline run (each concurrency, before and after the sweep): the ratio errs against us
    const bare = [...bareRuns].sort((a, b) => a.wallMs - b.wallMs)[0]!;
    const peak = [...sweep].sort((a, b) => b.provisionedPerSecond - a.provisionedPerSecond)[0]!;
    const atEightyPercent = await step({ rate: Math.round(peak.provisionedPerSecond * 0.8 * 10) / 10 });
    const bareRate = devices / (bare.wallMs / 1000);
    return {
      devices,
      sweep,
      peak,
      atEightyPercent,
      bare: { connectsPerSecond: bareRate, serviceCpuMs: bare.serviceCpuMs, clientCpuMs: bare.clientCpuMs, runs: bareRuns.map((b) => devices / (b.wallMs / 1000)) },
      ratio: peak.provisionedPerSecond / bareRate,
    };
  } finally {
    await service.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

export function printE2e(r: E2eResult): void {
  const line = (s: E2eStep) =>
    `${s.rate ? `rate ${s.rate.toFixed(1)}/s`.padEnd(16) : `concurrency ${s.concurrency}`.padEnd(16)} ${s.provisionedPerSecond.toFixed(1).padStart(7)} devices/s   p50 ${String(Math.round(s.p50Ms)).padStart(4)} ms  p99 ${String(Math.round(s.p99Ms)).padStart(4)} ms  failed ${s.failed}   CPU/device service ${s.serviceCpuMs.toFixed(2)} ms, devices ${s.clientCpuMs.toFixed(2)} ms`;
  console.log(`end to end (${r.devices} devices per step, claim -> provisioned; service in its own process, simulated devices in this one, same cores)`);
  for (const s of r.sweep) console.log(`  ${line(s)}`);
  console.log(`  at 80 % of peak: ${line(r.atEightyPercent)}`);
  console.log(
    `  bare mTLS connect+publish+close ${r.bare.connectsPerSecond.toFixed(1).padStart(7)} /s (runs at 40, 160 in flight, before and after: ${r.bare.runs.map((x) => x.toFixed(1)).join(', ')})   CPU/connection service ${r.bare.serviceCpuMs.toFixed(2)} ms, client ${r.bare.clientCpuMs.toFixed(2)} ms`,
  );
  console.log(
    `  peak ${r.peak.provisionedPerSecond.toFixed(1)} devices/s : bare ${r.bare.connectsPerSecond.toFixed(1)}/s = ratio ${r.ratio.toFixed(2)} (target >= 0.40; 0.50 is the two-handshake limit)   p99 at 80 % of peak ${Math.round(r.atEightyPercent.p99Ms)} ms (target <= 1000)`,
  );
}

if (import.meta.url === `file://${process.argv[1]}`) {
  printE2e(await benchE2e(Number(process.argv[2] ?? 1000), (process.argv[3] ?? '80,160,240').split(',').map(Number)));
}
