/** src/metrics: the device counts come from the store at most every few seconds, whatever the scrape rate. */
import { describe, expect, it } from 'vitest';
import { DEVICE_STATE_CACHE_MS, Metrics, timeStore } from '../../src/metrics/index.js';
import type { Store } from '../../src/store/index.js';

describe('provisiond_devices', () => {
  it('asks the store once per cache period, however many scrapes', async () => {
    const metrics = new Metrics();
    let now = 1_000_000;
    let calls = 0;
    let provisioned = 2;
    metrics.countDevicesWith(async () => {
      calls++;
      return provisioned > 0 ? { provisioned, claimed: 1 } : { claimed: 1 };
    }, () => now);
    const scrapes = await Promise.all([metrics.render(), metrics.render(), metrics.render()]);
    expect(calls).toBe(1);
    for (const { body } of scrapes) expect(body).toContain('provisiond_devices{state="provisioned"} 2');
    provisioned = 0;
    now += DEVICE_STATE_CACHE_MS - 1;
    expect((await metrics.render()).body).toContain('provisiond_devices{state="provisioned"} 2');
    expect(calls).toBe(1);
    now += 2;
    // a state whose last device left reads 0
    expect((await metrics.render()).body).toContain('provisiond_devices{state="provisioned"} 0');
    expect(calls).toBe(2);
  });
});

describe('timeStore', () => {
  it('times every call by operation, failed ones too, and keeps the store what it is', async () => {
    const metrics = new Metrics();
    class FakeStore {
      async getDevice() {
        return undefined;
      }
      async ping() {
        throw new Error('down');
      }
    }
    const store = timeStore(new FakeStore() as unknown as Store, metrics);
    await store.getDevice('x');
    await expect(store.ping()).rejects.toThrow('down');
    expect(store.constructor.name).toBe('FakeStore');
    expect(store).toBeInstanceOf(FakeStore);
    const { body } = await metrics.render();
    expect(body).toContain('provisiond_store_operation_seconds_count{operation="getDevice"} 1');
    expect(body).toContain('provisiond_store_operation_seconds_count{operation="ping"} 1');
  });
});
