/**
 * In-process publish/subscribe of service events, scoped by tenant, with a bounded replay buffer
 * per tenant so an SSE client that reconnects with Last-Event-ID misses nothing that is still
 * buffered. One instance per service, built by the composition root (no singleton).
 *
 * Several instances: the composition root relays every published event to the other instances
 * (src/alerts/redis-relay.ts), which hand it to receive(): it is buffered and reaches their SSE
 * subscribers, but not their subscribeAll forwarders, so a webhook is sent once, by the instance
 * where the event happened.
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { AlertsError } from './errors.js';

export interface ServiceEvent {
  /** Unique: `${epochMs}-${seq}`, or `${epochMs}-${seq}-${instance}` with several instances. */
  readonly id: string;
  readonly tenantId: string;
  /** e.g. 'device.stalled', 'device.provisioned', 'device.released'. */
  readonly type: string;
  /** ISO timestamp. */
  readonly at: string;
  readonly deviceId?: string;
  /** Goes to SSE clients and webhook receivers as is: never put secrets here. */
  readonly data: Readonly<Record<string, unknown>>;
}

/** What a publisher supplies; the bus assigns `id` and (unless given) `at`. */
export interface NewServiceEvent {
  tenantId: string;
  type: string;
  at?: string;
  deviceId?: string;
  data?: Record<string, unknown>;
}

export type EventListener = (event: ServiceEvent) => void;

export interface Subscription {
  /** Called once when the bus closes (not when the subscriber unsubscribes itself). */
  onClose?: () => void;
}

export interface Replay {
  /** Buffered events after `lastEventId`, oldest first. */
  readonly events: readonly ServiceEvent[];
  /**
   * true when `lastEventId` was not found (evicted from the buffer, from before a restart, or
   * unknown): `events` is then everything buffered and the client may have missed some.
   */
  readonly gap: boolean;
}

export interface EventBusOptions {
  clock: Clock;
  /** Listener failures are logged here. */
  log?: Logger;
  /** Events kept per tenant for replay (default 1000). */
  bufferSize?: number;
  /** Tag of this instance in event ids, when several instances relay events to each other. */
  instance?: string;
  /** Called with every event published here (not with received ones), e.g. to relay it. */
  onPublish?: (event: ServiceEvent) => void;
}

interface Entry {
  listener: EventListener;
  onClose: (() => void) | undefined;
}

/** Fixed-capacity ring of the most recent events. */
class Ring {
  readonly #items: (ServiceEvent | undefined)[];
  #next = 0;
  #size = 0;
  constructor(capacity: number) {
    this.#items = new Array<ServiceEvent | undefined>(capacity);
  }
  push(e: ServiceEvent): void {
    this.#items[this.#next] = e;
    this.#next = (this.#next + 1) % this.#items.length;
    this.#size = Math.min(this.#size + 1, this.#items.length);
  }
  /** Oldest first. */
  toArray(): ServiceEvent[] {
    const out: ServiceEvent[] = [];
    const cap = this.#items.length;
    for (let i = 0; i < this.#size; i++) out.push(this.#items[(this.#next - this.#size + i + cap) % cap]!);
    return out;
  }
}

export class EventBus {
  readonly #clock: Clock;
  readonly #log: Logger | undefined;
  readonly #bufferSize: number;
  readonly #idSuffix: string;
  readonly #onPublish: ((event: ServiceEvent) => void) | undefined;
  readonly #byTenant = new Map<string, Set<Entry>>();
  readonly #all = new Set<Entry>();
  readonly #buffers = new Map<string, Ring>();
  #seq = 0;
  #closed = false;

  constructor(opts: EventBusOptions) {
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#bufferSize = opts.bufferSize ?? 1000;
    this.#idSuffix = opts.instance === undefined ? '' : `-${opts.instance}`;
    this.#onPublish = opts.onPublish;
    if (!Number.isInteger(this.#bufferSize) || this.#bufferSize < 1) throw new RangeError('bufferSize must be a positive integer');
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Subscribers currently attached (all tenants plus subscribeAll); for metrics and leak checks. */
  get listenerCount(): number {
    let n = this.#all.size;
    for (const set of this.#byTenant.values()) n += set.size;
    return n;
  }

  /**
   * Buffers the event and hands it synchronously to the tenant's subscribers and to
   * subscribeAll listeners. A listener that throws is logged and does not affect the others or
   * the publisher. After close() events are still buffered but nobody is listening.
   */
  publish(input: NewServiceEvent): ServiceEvent {
    const now = this.#clock.now();
    const event: ServiceEvent = Object.freeze({
      id: `${now.getTime()}-${++this.#seq}${this.#idSuffix}`,
      tenantId: input.tenantId,
      type: input.type,
      at: input.at ?? now.toISOString(),
      ...(input.deviceId === undefined ? {} : { deviceId: input.deviceId }),
      data: Object.freeze({ ...input.data }),
    });
    this.#deliver(event, [...(this.#byTenant.get(event.tenantId) ?? []), ...this.#all]);
    try {
      this.#onPublish?.(event);
    } catch (err) {
      this.#log?.error({ err, eventId: event.id }, 'event relay failed');
    }
    return event;
  }

  /**
   * An event published by another instance: buffered and handed to this tenant's subscribers
   * (SSE), not to subscribeAll forwarders (the origin instance forwards it).
   */
  receive(event: ServiceEvent): void {
    this.#deliver(Object.freeze({ ...event, data: Object.freeze({ ...event.data }) }), [...(this.#byTenant.get(event.tenantId) ?? [])]);
  }

  #deliver(event: ServiceEvent, targets: readonly Entry[]): void {
    let ring = this.#buffers.get(event.tenantId);
    if (!ring) this.#buffers.set(event.tenantId, (ring = new Ring(this.#bufferSize)));
    ring.push(event);
    for (const entry of targets) {
      try {
        entry.listener(event);
      } catch (err) {
        this.#log?.error({ err, eventId: event.id, type: event.type }, 'event listener failed');
      }
    }
  }

  /** Events of this tenant only. Returns the unsubscribe function (idempotent). */
  subscribe(tenantId: string, listener: EventListener, sub: Subscription = {}): () => void {
    this.#assertOpen();
    let set = this.#byTenant.get(tenantId);
    if (!set) this.#byTenant.set(tenantId, (set = new Set()));
    const entry: Entry = { listener, onClose: sub.onClose };
    set.add(entry);
    return () => {
      const current = this.#byTenant.get(tenantId);
      if (!current?.delete(entry)) return;
      if (current.size === 0) this.#byTenant.delete(tenantId);
    };
  }

  /** Events of every tenant (for forwarders such as webhooks). */
  subscribeAll(listener: EventListener, sub: Subscription = {}): () => void {
    this.#assertOpen();
    const entry: Entry = { listener, onClose: sub.onClose };
    this.#all.add(entry);
    return () => void this.#all.delete(entry);
  }

  /** Buffered events of the tenant after `lastEventId` (all buffered ones when it is absent). */
  since(tenantId: string, lastEventId?: string): Replay {
    const events = this.#buffers.get(tenantId)?.toArray() ?? [];
    if (lastEventId === undefined) return { events, gap: false };
    const at = events.findIndex((e) => e.id === lastEventId);
    return at < 0 ? { events, gap: true } : { events: events.slice(at + 1), gap: false };
  }

  /** Detaches every subscriber, calling its onClose. New subscriptions are refused afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const entries = [...this.#all, ...[...this.#byTenant.values()].flatMap((s) => [...s])];
    this.#all.clear();
    this.#byTenant.clear();
    for (const entry of entries) {
      try {
        entry.onClose?.();
      } catch (err) {
        this.#log?.error({ err }, 'event subscriber close failed');
      }
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new AlertsError('EVENT_STREAM_CLOSED', 'the event bus is closed');
  }
}
