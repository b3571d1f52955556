/**
 * A throw-away provisiond in this process (embedded SQLite store in a temporary directory,
 * generated CA, HTTP and MQTT/TLS on free loopback ports) with a factory and an installer key:
 * what `npm run fleet -- --local` provisions against. The fleet runner itself only sees the URL and
 * the keys, as it would of a real deployment.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../config/index.js';
import { startService } from '../main.js';

export interface LocalService {
  apiUrl: string;
  mqttPort: number;
  factoryKey: string;
  installerKey: string;
  dataDir: string;
  /** The service's own records, by state. */
  countDevicesByState(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

export async function startLocalService(opts: { dataDir?: string; env?: NodeJS.ProcessEnv } = {}): Promise<LocalService> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'provisiond-fleet-')));
  const config = loadConfig({
    env: opts.env ?? process.env,
    // every simulated device comes from this machine's address: no per-address connection limit
    overrides: { dataDir, logLevel: 'error', http: { host: '127.0.0.1', port: 0 }, mqtt: { host: '127.0.0.1', port: 0, connectionRatePerAddressPerSecond: 0 }, est: { enabled: false } },
  });
  const running = await startService(config);
  try {
    const factory = await running.apiKeys.create('default', 'fleet runner factory line', 'factory');
    const installer = await running.apiKeys.create('default', 'fleet runner installer', 'installer');
    return {
      apiUrl: running.httpUrl,
      mqttPort: running.mqttPort,
      factoryKey: factory.secret,
      installerKey: installer.secret,
      dataDir,
      countDevicesByState: async () => ({ ...(await running.store.countDevicesByState()) }) as Record<string, number>,
      stop: async () => {
        await running.stop();
        if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await running.stop();
    throw err;
  }
}
