/**
 * Relays service events between instances over Redis pub/sub, so an operator's event stream (SSE)
 * on any instance shows what happens on all of them. Each instance publishes the events of its
 * bus on one channel and hands the others' to its bus (EventBus.receive). Pub/sub is fire and
 * forget: an instance that is disconnected from Redis misses what was published meanwhile, and
 * its SSE clients get the replay-gap notice when they ask for an event it never saw.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { createRedisClient, type RedisClient, type RedisSettings } from '../store/index.js';
import type { EventBus, ServiceEvent } from './bus.js';

interface Envelope {
  origin: string;
  event: ServiceEvent;
}

export class RedisEventRelay {
  /** This instance's tag: in event ids and on the envelopes it publishes. */
  readonly instance = randomBytes(4).toString('hex');
  readonly #channel: string;
  readonly #pub: RedisClient;
  readonly #sub: RedisClient;
  #bus: EventBus | undefined;

  constructor(
    settings: RedisSettings,
    /** The store's key prefix: deployments sharing a Redis do not hear each other. */
    prefix: string,
    private readonly log: Logger,
  ) {
    this.#channel = `${prefix}events`;
    const connect = (role: string) => {
      const conn = createRedisClient(settings, { maxRetriesPerRequest: null });
      conn.on('error', (err: Error) => log.warn({ role, err: err.message }, 'event relay Redis connection error'));
      return conn;
    };
    this.#pub = connect('events-pub');
    this.#sub = connect('events-sub');
  }

  /** Subscribes and starts handing the other instances' events to `bus`. */
  async start(bus: EventBus): Promise<void> {
    this.#bus = bus;
    this.#sub.on('message', (channel: string, message: string) => {
      if (channel !== this.#channel) return;
      let envelope: Envelope;
      try {
        envelope = JSON.parse(message) as Envelope;
      } catch {
        this.log.warn({ channel }, 'ignored a malformed relayed event');
        return;
      }
      if (envelope.origin === this.instance || typeof envelope.event?.tenantId !== 'string') return;
      this.#bus?.receive(envelope.event);
    });
    await this.#sub.subscribe(this.#channel);
  }

  /** Sends an event published on this instance to the others (never throws; logs instead). */
  relay(event: ServiceEvent): void {
    const envelope: Envelope = { origin: this.instance, event };
    this.#pub.publish(this.#channel, JSON.stringify(envelope)).catch((err: unknown) => {
      this.log.warn({ err: err instanceof Error ? err.message : String(err), eventId: event.id }, 'could not relay an event to the other instances');
    });
  }

  async stop(): Promise<void> {
    this.#bus = undefined;
    for (const conn of [this.#sub, this.#pub]) await conn.quit().catch(() => conn.disconnect());
  }
}
