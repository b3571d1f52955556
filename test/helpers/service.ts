/** Starts a real provisiond (SQLite file in a temp dir, real CA, real TLS on port 0) for a test. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServiceConfig } from '../../schemas/types.js';
import type { Clock } from '../../src/clock.js';
import { loadConfig } from '../../src/config/index.js';
import { startService, type RunningService } from '../../src/main.js';

export interface TenantKeys {
  admin: string;
  factory: string;
  installer: string;
  hub: string;
  viewer: string;
}

export interface TestService {
  running: RunningService;
  dataDir: string;
  keys: TenantKeys;
  /** Creates a tenant through the API (as the service tenant's admin) with keys for every role. */
  tenant(id: string, extra?: Record<string, unknown>): Promise<TenantKeys>;
  /** mqtts://localhost:<port> */
  mqttUrl: string;
  stop(): Promise<void>;
}

export async function startTestService(overrides: ServiceConfig = {}, options: { clock?: Clock; dataDir?: string } = {}): Promise<TestService> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'provisiond-test-')));
  const config = loadConfig({
    env: {},
    overrides: {
      logLevel: 'silent',
      ...overrides,
      dataDir,
      http: { host: '127.0.0.1', port: 0, ...overrides.http },
      mqtt: { host: '127.0.0.1', port: 0, ...overrides.mqtt },
      est: { port: 0, ...overrides.est },
    },
  });
  const running = await startService(config, options.clock ? { clock: options.clock } : {});
  const keysFor = async (tenantId: string): Promise<TenantKeys> => {
    const [admin, factory, installer, hub, viewer] = await Promise.all(
      (['admin', 'factory', 'installer', 'hub', 'viewer'] as const).map((role) => running.apiKeys.create(tenantId, `test ${role}`, role)),
    );
    return { admin: admin!.secret, factory: factory!.secret, installer: installer!.secret, hub: hub!.secret, viewer: viewer!.secret };
  };
  const keys = await keysFor('default');
  return {
    running,
    dataDir,
    keys,
    tenant: async (id, extra = {}) => {
      const res = await running.api.inject({
        method: 'POST',
        url: '/v1/tenants',
        headers: { authorization: `Bearer ${keys.admin}` },
        payload: { id, name: `Tenant ${id}`, ...extra },
      });
      if (res.statusCode !== 201) throw new Error(`tenant create failed: ${res.body}`);
      return keysFor(id);
    },
    mqttUrl: `mqtts://localhost:${running.mqttPort}`,
    stop: async () => {
      await running.stop();
      if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Everything the store holds about one device, to prove a rejected input changed nothing. */
export async function snapshotDevice(running: RunningService, deviceId: string) {
  const { store } = running;
  const device = await store.getDevice(deviceId);
  return {
    device,
    events: await store.listEvents(deviceId),
    certificates: await store.listCertificates(deviceId),
    token: device?.bootstrapJti ? await store.getBootstrapToken(device.bootstrapJti) : undefined,
  };
}
