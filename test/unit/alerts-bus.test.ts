/** EventBus: tenant isolation, ids, replay buffer, close. */
import { describe, expect, it } from 'vitest';
import { AlertsError, EventBus, type ServiceEvent } from '../../src/alerts/index.js';
import { ManualClock } from '../helpers/clock.js';

const newBus = (bufferSize?: number) => new EventBus({ clock: new ManualClock(new Date('2030-01-01T00:00:00Z')), ...(bufferSize === undefined ? {} : { bufferSize }) });

describe('EventBus', () => {
  it('delivers a tenant its own events only; subscribeAll sees every tenant', () => {
    const bus = newBus();
    const a: ServiceEvent[] = [];
    const b: ServiceEvent[] = [];
    const all: ServiceEvent[] = [];
    bus.subscribe('a', (e) => a.push(e));
    bus.subscribe('b', (e) => b.push(e));
    bus.subscribeAll((e) => all.push(e));
    bus.publish({ tenantId: 'a', type: 'device.stalled', deviceId: 'd1', data: { state: 'claimed' } });
    bus.publish({ tenantId: 'b', type: 'device.provisioned', deviceId: 'd2', data: {} });
    expect(a.map((e) => e.deviceId)).toEqual(['d1']);
    expect(b.map((e) => e.deviceId)).toEqual(['d2']);
    expect(all.map((e) => e.tenantId)).toEqual(['a', 'b']);
    expect(a[0]).toMatchObject({ tenantId: 'a', type: 'device.stalled', at: '2030-01-01T00:00:00.000Z', data: { state: 'claimed' } });
  });

  it('assigns unique increasing ids and freezes what it hands out', () => {
    const bus = newBus();
    const data = { n: 1 };
    const e1 = bus.publish({ tenantId: 'a', type: 't', data });
    const e2 = bus.publish({ tenantId: 'a', type: 't' });
    expect(e1.id).toMatch(/^\d+-\d+$/);
    expect(e1.id).not.toBe(e2.id);
    expect(Number(e2.id.split('-')[1])).toBeGreaterThan(Number(e1.id.split('-')[1]));
    data.n = 2;
    expect(e1.data).toEqual({ n: 1 });
    expect(Object.isFrozen(e1) && Object.isFrozen(e1.data)).toBe(true);
    expect(e2.data).toEqual({});
  });

  it('unsubscribe detaches (idempotently) and a throwing listener does not stop the others', () => {
    const bus = newBus();
    const got: string[] = [];
    bus.subscribe('a', () => {
      throw new Error('boom');
    });
    const off = bus.subscribe('a', (e) => got.push(e.type));
    expect(bus.listenerCount).toBe(2);
    expect(() => bus.publish({ tenantId: 'a', type: 'one' })).not.toThrow();
    off();
    off();
    bus.publish({ tenantId: 'a', type: 'two' });
    expect(got).toEqual(['one']);
    expect(bus.listenerCount).toBe(1);
  });

  it('replays what followed a known id, per tenant', () => {
    const bus = newBus();
    const ids = ['e1', 'e2', 'e3'].map((type) => bus.publish({ tenantId: 'a', type }).id);
    bus.publish({ tenantId: 'b', type: 'other' });
    expect(bus.since('a', ids[0]).events.map((e) => e.type)).toEqual(['e2', 'e3']);
    expect(bus.since('a', ids[0]).gap).toBe(false);
    expect(bus.since('a', ids[2]).events).toEqual([]);
    expect(bus.since('a').events.map((e) => e.type)).toEqual(['e1', 'e2', 'e3']);
    expect(bus.since('nobody', ids[0])).toEqual({ events: [], gap: true });
    // another tenant's id is unknown here: no replay of that tenant's stream, and a gap
    const other = bus.since('b', ids[0]);
    expect(other.gap).toBe(true);
    expect(other.events.map((e) => e.type)).toEqual(['other']);
  });

  it('keeps only the newest bufferSize events and reports a gap for an evicted id', () => {
    const bus = newBus(3);
    const ids = Array.from({ length: 5 }, (_, i) => bus.publish({ tenantId: 'a', type: `e${i}` }).id);
    expect(bus.since('a').events.map((e) => e.type)).toEqual(['e2', 'e3', 'e4']);
    expect(bus.since('a', ids[0])).toMatchObject({ gap: true });
    expect(bus.since('a', ids[0]).events.map((e) => e.type)).toEqual(['e2', 'e3', 'e4']);
    expect(bus.since('a', ids[2]).events.map((e) => e.type)).toEqual(['e3', 'e4']);
    expect(() => newBus(0)).toThrow(RangeError);
  });

  it('close() detaches everyone, calls onClose once, and refuses new subscribers', () => {
    const bus = newBus();
    let closed = 0;
    const off = bus.subscribe('a', () => undefined, { onClose: () => closed++ });
    bus.subscribeAll(() => undefined, { onClose: () => closed++ });
    bus.close();
    bus.close();
    off();
    expect(closed).toBe(2);
    expect(bus.listenerCount).toBe(0);
    expect(() => bus.subscribe('a', () => undefined)).toThrow(AlertsError);
    // publishers are not broken by shutdown order
    expect(bus.publish({ tenantId: 'a', type: 'late' }).type).toBe('late');
  });
});
