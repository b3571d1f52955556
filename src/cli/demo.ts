/**
 * `npm run demo`: start a throw-away provisiond (embedded SQLite store, generated CA) and
 * provision N simulated devices end to end over the real path, then print a summary.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { runFleet, type FleetReport } from '../../firmware-sim/index.js';
import { loadConfig } from '../config/index.js';
import { startService } from '../main.js';

export interface DemoOptions {
  devices: number;
  concurrency: number;
  json: boolean;
  /** Keep the service's data here instead of a temporary directory. */
  dataDir?: string;
}

export type DemoSummary = Omit<FleetReport, 'results' | 'devicesPerSecond'> & { devicesPerSecond: number; dataDir: string };

export async function runDemo(opts: DemoOptions): Promise<DemoSummary> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'provisiond-demo-')));
  const config = loadConfig({
    env: process.env,
    overrides: { dataDir, logLevel: 'error', http: { host: '127.0.0.1', port: 0 }, mqtt: { host: '127.0.0.1', port: 0 }, est: { enabled: false } },
  });
  const running = await startService(config);
  const bar = new cliProgress.SingleBar(
    {
      format: 'provisioning |{bar}| {value}/{total} devices  failed {failed}  {duration}s',
      stream: process.stderr,
      hideCursor: true,
      noTTYOutput: !opts.json, // without a terminal: a progress line every second
      notTTYSchedule: 1000,
    },
    cliProgress.Presets.shades_classic,
  );
  try {
    const factory = await running.apiKeys.create('default', 'demo factory line', 'factory');
    const installer = await running.apiKeys.create('default', 'demo installer', 'installer');
    if (!opts.json) console.error(`provisiond demo: service at ${running.httpUrl}, MQTT/TLS port ${running.mqttPort}, data in ${dataDir}`);
    bar.start(opts.devices, 0, { failed: 0 });
    const fleet = await runFleet({
      apiUrl: running.httpUrl,
      factoryKey: factory.secret,
      installerKey: installer.secret,
      devices: opts.devices,
      concurrency: opts.concurrency,
      hold: true,
      onProgress: ({ done, failed }) => bar.update(done, { failed }),
    });
    bar.stop();
    // Every device must be recorded as provisioned by the service itself, not only by the sim.
    const counts = await running.store.countDevicesByState();
    await fleet.stop();
    const { results: _results, ...report } = fleet.report;
    const summary: DemoSummary = { ...report, dataDir };
    if (opts.json) {
      console.log(JSON.stringify({ ...summary, storeStates: counts }));
    } else {
      console.log(
        [
          '',
          'provisiond demo summary',
          `  devices total      ${summary.total}`,
          `  provisioned        ${summary.provisioned}   (service records: ${counts.provisioned ?? 0} provisioned)`,
          `  failed             ${summary.failed}${Object.keys(summary.errors).length ? `   ${JSON.stringify(summary.errors)}` : ''}`,
          `  wall time          ${(summary.wallMs / 1000).toFixed(2)} s   (${summary.devicesPerSecond} devices/s)`,
          `  latency per device p50 ${summary.latencyMs.p50} ms, p99 ${summary.latencyMs.p99} ms (claim -> provisioned)`,
        ].join('\n'),
      );
    }
    return summary;
  } finally {
    bar.stop();
    await running.stop();
    if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
  }
}
