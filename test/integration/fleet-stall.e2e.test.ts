/**
 * The end-to-end case: a fleet on a profile with one required item that a broken device
 * never acknowledges. The others reach provisioned; the broken one becomes stalled when the
 * deadline passes (pinned clock); the webhook alert arrives; the fleet report shows it with the
 * missing item.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { ClaimResponse, FleetReport } from '../../schemas/types.js';
import { ManualClock } from '../helpers/clock.js';
import { NETWORK } from '../helpers/device.js';
import { startTestService, type TenantKeys, type TestService } from '../helpers/service.js';
import { webhookReceiver } from '../helpers/webhook.js';
import { waitUntil } from '../helpers/wait.js';

const auth = (key: string) => ({ authorization: `Bearer ${key}` });
let clock: ManualClock;
let ts: TestService;
let keys: TenantKeys;
let hook: Awaited<ReturnType<typeof webhookReceiver>>;

beforeAll(async () => {
  clock = new ManualClock(new Date(Date.now() - 3_600_000)); // the fleet is installed an hour ago
  hook = await webhookReceiver();
  ts = await startTestService({}, { clock });
  keys = await ts.tenant('hotel', { webhook: { url: hook.url } });
});
afterAll(async () => {
  await ts?.stop();
  await hook?.close();
});

describe('a fleet with one broken device', () => {
  it('provisions the others, stalls the broken one, alerts, and reports what it misses', async () => {
    const profile = await ts.running.api.inject({
      method: 'PUT',
      url: '/v1/profiles/room-thermostat',
      headers: auth(keys.admin),
      payload: {
        name: 'Room thermostats',
        defaultForModels: ['thermostat'],
        deadlineSeconds: 1800,
        items: [
          { id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} },
          { id: 'security', type: 'security-policy', required: true, priority: 10, await: false, data: { minTlsVersion: '1.2', telemetryIntervalSeconds: 60, allowedTopics: ['devices/{deviceId}/telemetry'], firmwareFloor: '1.0.0' } },
          { id: 'telemetry', type: 'telemetry', required: true, priority: 20, await: false, data: { intervalSeconds: 60 } },
          { id: 'tz', type: 'time', required: false, priority: 30, await: false, data: { timezone: 'Europe/Paris', ntp: ['pool.ntp.org'] } },
        ],
      },
    });
    expect(profile.statusCode).toBe(200);

    const ids = Array.from({ length: 6 }, (_, i) => `room-${100 + i}`);
    const devices: SimDevice[] = [];
    try {
      await Promise.all(
        ids.map(async (id, i) => {
          await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(keys.factory), payload: { id, model: 'thermostat', claimCode: `${id}-label-code` } });
          const claim = (
            await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(keys.installer), payload: { claimCode: `${id}-label-code`, owner: 'Hotel', site: i < 3 ? 'floor-1' : 'floor-2', network: NETWORK } })
          ).json() as ClaimResponse;
          expect(claim.device).toMatchObject({ profileId: 'room-thermostat', profileVersion: 1 });
          const broken = id === 'room-103';
          const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: claim.bootstrap, ...(broken ? { brokenItems: ['telemetry'] } : {}) });
          devices.push(device);
          await device.run();
        }),
      );
      await waitUntil(async () => (await ts.running.store.getDevice('room-103'))?.config?.items.find((i) => i.id === 'tz')?.status === 'applied', 'the broken device acknowledged the rest');
      const broken = await ts.running.store.getDevice('room-103');
      expect(broken?.state).toBe('configuring');
      expect(broken?.config?.items.find((i) => i.id === 'telemetry')?.status).toBe('pending');

      // the deadline (30 minutes after the claim, an hour ago) has passed: the periodic scan runs
      clock.set(new Date());
      expect((await ts.running.lifecycle.scanStalls()).stalled).toEqual(['room-103']);

      const [alert] = await hook.waitFor(1);
      expect(alert!.body).toMatchObject({ type: 'device.stalled', tenantId: 'hotel', deviceId: 'room-103', data: { missing: ['telemetry'], site: 'floor-2', profileId: 'room-thermostat' } });

      const report = (await ts.running.api.inject({ url: '/v1/reports/fleet', headers: auth(keys.viewer) })).json() as FleetReport;
      expect(report).toMatchObject({ tenantId: 'hotel', total: 6, byState: { provisioned: 5, stalled: 1 }, provisionedPercent: 83.3 });
      expect(report.timeToProvisioned.count).toBe(5);
      expect(report.stalled).toEqual([expect.objectContaining({ deviceId: 'room-103', site: 'floor-2', profileId: 'room-thermostat', missing: ['telemetry'] })]);
      expect(report.bySite).toEqual([
        expect.objectContaining({ key: 'floor-1', total: 3, byState: { provisioned: 3 }, provisionedPercent: 100 }),
        expect.objectContaining({ key: 'floor-2', total: 3, byState: { provisioned: 2, stalled: 1 } }),
      ]);
      const csv = (await ts.running.api.inject({ url: '/v1/reports/devices.csv', headers: auth(keys.viewer) })).body;
      expect(csv.split('\r\n')[0]).toContain('missing');
      expect(csv).toMatch(/room-103,hotel,thermostat,stalled,.*telemetry/);
    } finally {
      await Promise.all(devices.map((d) => d.stop()));
    }
  });
});
