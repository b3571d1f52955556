/**
 * The broker's abuse limits (docs/protocol.md §20): the rate of new connections (per source address
 * and in all, decided before the TLS handshake), the size of a packet (decided from its fixed
 * header, before its body is buffered), the depth of topics, the messages in flight on a connection
 * in each direction, and the topic filters a connection holds. broker.ts asks from aedes' hooks;
 * the decisions, and the counting of every refusal (provisiond_mqtt_rejections_total{limit}), are
 * here.
 */
import type { Socket } from 'node:net';
import type { Client } from 'aedes';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Metrics, MqttLimit } from '../metrics/index.js';
import { MemoryRateLimiter, addressKey, type RateLimit } from '../policy/index.js';
import { BrokerError } from './errors.js';

export interface BrokerLimits {
  /** New connections per source address (this instance). */
  connectionRatePerAddress: RateLimit;
  /** New connections in all (this instance). */
  connectionRate: RateLimit;
  /** Largest payload handled; a packet announcing more than twice this is cut off unread. */
  maxPayloadBytes: number;
  maxTopicLevels: number;
  /** Messages of one connection handled at once. */
  maxInflightInbound: number;
  /** QoS 1 service messages awaiting one connection's PUBACK. */
  maxInflightOutbound: number;
  /** Topic filters one connection holds. */
  maxSubscriptions: number;
}

/** What one connection holds against the limits. */
export interface ConnectionUsage {
  /** Its messages being handled now. */
  inbound: number;
  /** QoS 1 messages sent to it and not acknowledged yet. */
  outbound: number;
  /** Topic filters granted. */
  subscriptions: Set<string>;
  /** Set once it is being closed for a limit (counted once). */
  closing: boolean;
}

/** The parts of aedes' client and mqtt-packet's parser the packet checks hook into (aedes 1.2). */
interface PacketParser {
  packet: { cmd?: string; length: number };
  _parseLength(): boolean;
  _emitError(err: Error): void;
  prependListener(event: 'packet', fn: (packet: Record<string, unknown>) => void): unknown;
}

function levels(topic: unknown): number {
  if (typeof topic !== 'string') return 0;
  let n = 1;
  for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === 47) n++;
  return n;
}

export class ConnectionLimits {
  readonly #rates: MemoryRateLimiter;
  readonly #usage = new WeakMap<Client, ConnectionUsage>();
  #unhooked = false;

  constructor(
    readonly limits: BrokerLimits,
    clock: Clock,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.#rates = new MemoryRateLimiter(clock);
  }

  /** Largest packet read in full: twice the payload limit (room for the topic and the answer to an oversized payload). */
  get maxPacketBytes(): number {
    return 2 * this.limits.maxPayloadBytes;
  }

  /** A new TCP connection, before TLS: whether to take it. A refusal is counted (the caller closes the socket). */
  admit(socket: Socket): boolean {
    const address = socket.remoteAddress ?? 'unknown';
    const verdict = this.#rates.takeNow([
      { key: `address:${addressKey(address)}`, limit: this.limits.connectionRatePerAddress },
      { key: 'total', limit: this.limits.connectionRate },
    ]);
    if (verdict.allowed) return true;
    const limit: MqttLimit = verdict.refused === 0 ? 'connection_rate_address' : 'connection_rate_total';
    this.metrics.mqttRejections.inc({ limit });
    // debug: a flood must not become a flood of log lines; the metric counts every refusal
    this.log.debug({ address, code: 'CONNECTION_RATE_LIMITED', limit }, 'connection refused before TLS');
    return false;
  }

  usage(client: Client): ConnectionUsage {
    let usage = this.#usage.get(client);
    if (!usage) this.#usage.set(client, (usage = { inbound: 0, outbound: 0, subscriptions: new Set(), closing: false }));
    return usage;
  }

  /** Counts a refusal that does not close the connection (logged at info). */
  refused(limit: MqttLimit, fields: Record<string, unknown>, msg: string): void {
    this.metrics.mqttRejections.inc({ limit });
    this.log.info(fields, msg);
  }

  /** Counts a refusal that closes the connection, once per connection (logged at warn). Returns false if it was counted already. */
  closing(client: Client, limit: MqttLimit, fields: Record<string, unknown>, msg: string): boolean {
    const usage = this.usage(client);
    if (usage.closing) return false;
    usage.closing = true;
    this.metrics.mqttRejections.inc({ limit });
    this.log.warn({ clientId: client.id ?? undefined, ...fields }, msg);
    return true;
  }

  /**
   * The checks on packets as they are read, installed right after aedes took the socket (before any
   * byte is parsed): a packet whose fixed header announces more than maxPacketBytes ends the
   * connection there (PACKET_TOO_LARGE), so no body is buffered, not even before CONNECT; a topic
   * deeper than maxTopicLevels is counted and logged (TOPIC_TOO_DEEP) before aedes, which enforces
   * the same maxTopicLevels, closes the connection.
   */
  watchPackets(client: Client): void {
    const parser = (client as unknown as { _parser?: PacketParser })._parser;
    if (!parser || typeof parser._parseLength !== 'function' || typeof parser._emitError !== 'function') {
      if (!this.#unhooked) this.log.error('the MQTT parser is not the expected one (aedes 1.2): packet size and topic depth are not checked before parsing');
      this.#unhooked = true;
      return;
    }
    const limits = this;
    const max = this.maxPacketBytes;
    const parseLength = parser._parseLength;
    parser._parseLength = function (this: PacketParser) {
      const done = parseLength.call(this);
      if (done && this.packet.length > max) {
        const err = new BrokerError('PACKET_TOO_LARGE', `a ${this.packet.cmd ?? 'packet'} of ${this.packet.length} bytes is more than the ${max} allowed`);
        limits.closing(client, 'packet_size', { code: err.code, cmd: this.packet.cmd, bytes: this.packet.length }, 'packet too large, closing connection');
        this._emitError(err);
        return false;
      }
      return done;
    };
    const maxLevels = this.limits.maxTopicLevels;
    parser.prependListener('packet', (packet) => {
      const topics =
        packet.cmd === 'publish'
          ? [packet.topic]
          : packet.cmd === 'subscribe'
            ? ((packet.subscriptions as { topic: unknown }[] | undefined) ?? []).map((s) => s.topic)
            : packet.cmd === 'unsubscribe'
              ? ((packet.unsubscriptions as unknown[] | undefined) ?? [])
              : [];
      const deep = topics.find((t) => levels(t) > maxLevels);
      if (deep !== undefined) {
        // aedes refuses it with its own (uncoded) error and closes the connection
        this.closing(client, 'topic_depth', { code: 'TOPIC_TOO_DEEP', cmd: packet.cmd, levels: levels(deep), max: maxLevels }, 'topic too deep, closing connection');
      }
    });
  }
}
