/**
 * End to end: devices fully provisioned per second (register, claim, bootstrap, CSR, certificate,
 * mutual-TLS reconnect, signed config, acknowledgement) with p50/p99 latency, against the bare
 * mutual-TLS connect + publish + close rate of the same client stack (mqtt.js) on the same broker,
 * measured in the same run. Client and service share this machine's cores.
 *
 *   npx tsx bench/e2e.ts [devices] [concurrency]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { percentile, runFleet } from '../firmware-sim/index.js';
import { loadConfig } from '../src/config/index.js';
import { startService } from '../src/main.js';

export interface E2eResult {
  devices: number;
  concurrency: number;
  provisionedPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  failed: number;
  bareConnectsPerSecond: number;
  ratio: number;
}

export async function benchE2e(devices = 400, concurrency = 40): Promise<E2eResult> {
  const dataDir = await mkdtemp(join(tmpdir(), 'provisiond-bench-'));
  const running = await startService(
    loadConfig({ env: {}, overrides: { dataDir, logLevel: 'error', http: { host: '127.0.0.1', port: 0 }, mqtt: { host: '127.0.0.1', port: 0 }, est: { enabled: false } } }),
  );
  try {
    const factory = await running.apiKeys.create('default', 'bench factory', 'factory');
    const installer = await running.apiKeys.create('default', 'bench installer', 'installer');
    const fleet = await runFleet({
      apiUrl: running.httpUrl,
      factoryKey: factory.secret,
      installerKey: installer.secret,
      devices,
      concurrency,
      hold: false,
    });
    const r = fleet.report;

    // Baseline: the same client stack doing only a mutual-TLS connect, one QoS 1 publish, close.
    const few = await runFleet({ apiUrl: running.httpUrl, factoryKey: factory.secret, installerKey: installer.secret, devices: concurrency, concurrency, hold: true });
    const creds = few.devices.map((d) => ({ id: d.deviceId, key: d.keyPem, cert: d.certificatePem }));
    await few.stop();
    const url = `mqtts://localhost:${running.mqttPort}`;
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      creds.map(async (c) => {
        while (next++ < devices) {
          const client = await mqtt.connectAsync(url, { clientId: c.id, key: c.key, cert: c.cert, ca: running.ca.rootPem, reconnectPeriod: 0, protocolVersion: 4 });
          // the same socket setting as the simulated devices (TCP_NODELAY)
          (client.stream as { setNoDelay?: (noDelay: boolean) => void }).setNoDelay?.(true);
          await client.publishAsync(`devices/${c.id}/telemetry`, '{"t":1}', { qos: 1 });
          await client.endAsync();
        }
      }),
    );
    const bare = devices / ((performance.now() - t0) / 1000);
    const perSecond = r.provisioned / (r.wallMs / 1000);
    const totals = r.results.filter((x) => x.ok).map((x) => x.totalMs!).sort((a, b) => a - b);
    return {
      devices,
      concurrency,
      provisionedPerSecond: perSecond,
      p50Ms: percentile(totals, 50),
      p99Ms: percentile(totals, 99),
      failed: r.failed,
      bareConnectsPerSecond: bare,
      ratio: perSecond / bare,
    };
  } finally {
    await running.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

export function printE2e(r: E2eResult): void {
  console.log(`end to end (${r.devices} devices, concurrency ${r.concurrency}, client and service on the same cores)`);
  console.log(`  provisioned                          ${r.provisionedPerSecond.toFixed(1).padStart(8)} devices/s   p50 ${Math.round(r.p50Ms)} ms, p99 ${Math.round(r.p99Ms)} ms, failed ${r.failed}`);
  console.log(`  bare mTLS connect+publish+close      ${r.bareConnectsPerSecond.toFixed(1).padStart(8)} /s           ratio ${r.ratio.toFixed(2)}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  printE2e(await benchE2e(Number(process.argv[2] ?? 400), Number(process.argv[3] ?? 40)));
}
