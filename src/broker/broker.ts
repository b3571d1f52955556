/**
 * The embedded MQTT broker: aedes on TLS. Hooks are thin: they identify the session (bootstrap
 * credential or client certificate), ask src/policy whether a topic is allowed, hand payloads to
 * the provisioning use-cases and publish their answers. Nothing here decides provisioning logic.
 */
import { X509Certificate, constants as cryptoConstants } from 'node:crypto';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import { Aedes, type AedesPublishPacket, type AuthenticateError, type Client, type PublishPacket } from 'aedes';
import aedesPersistenceRedis from 'aedes-persistence-redis';
import mqemitterRedis from 'mqemitter-redis';
import { clusterSafePrefix, createRedisClient, type RedisClient, type RedisSettings } from '../store/index.js';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { isProvisiondError } from '../errors.js';
import type { Metrics } from '../metrics/index.js';
import { childTopic, deviceTopic, hubMaySubscribe, hubPublishTarget, hubTopic, maySubscribe, publishTarget, type HubInbound, type InboundTopic } from '../policy/index.js';
import { ProvisioningError, type DeviceGateway, type DeviceSession, type ProvisioningService } from '../provisioning/index.js';
import { BrokerError } from './errors.js';
import { ConnectionLimits, type BrokerLimits } from './limits.js';
import { connackFor, errorPayload } from './replies.js';

export interface BrokerOptions {
  host: string;
  port: number;
  connectTimeoutMs: number;
  /** Abuse limits (docs/protocol.md §20), each refusal counted in `metrics`. */
  limits: BrokerLimits;
  metrics: Metrics;
  clock: Clock;
  /**
   * Several instances: sessions, offline messages and subscriptions in Redis
   * (aedes-persistence-redis) and message fan-out through Redis (mqemitter-redis), so a message
   * published by one instance reaches a device connected to another.
   */
  shared?: {
    redis: RedisSettings;
    /** Prefix of the session keys (the store's prefix + `mqtt:`); hash-tagged in Cluster mode. */
    prefix: string;
  };
  tls: {
    keyPem: string;
    /** Server certificate followed by its issuing CA. */
    certChainPem: string;
    /** CAs that client certificates must chain to (issuing and root). */
    clientCaPems: readonly string[];
  };
}

/** Internal topic for orders between instances; devices can neither publish nor subscribe to it. */
const CONTROL_TOPIC = '$provisiond/control/disconnect';

/**
 * Redis-backed session store and message fan-out for several instances. Their connections are
 * ours, so that a Redis outage is logged (and retried by ioredis) instead of surfacing as an
 * unhandled 'error' event.
 */
function sharedBackends(shared: NonNullable<BrokerOptions['shared']>, log: Logger) {
  const connections: RedisClient[] = [];
  const connect = (role: string, keyPrefix?: string) => {
    const conn = createRedisClient(shared.redis, { maxRetriesPerRequest: null, ...(keyPrefix !== undefined ? { keyPrefix } : {}) });
    conn.on('error', (err: Error) => log.warn({ role, err: err.message }, 'broker Redis connection error'));
    // mqemitter-redis closes with quit() and ignores the promise. At shutdown ioredis can reject it
    // with "Connection is closed." (seen when aedes still publishes while it closes: the socket
    // ends with EPIPE before the QUIT is answered); unhandled, that rejection ended the process
    // with status 1 on SIGTERM. The connection is gone either way.
    const quit = conn.quit.bind(conn) as () => Promise<unknown>;
    (conn as unknown as { quit: () => Promise<unknown> }).quit = () => {
      const done = quit();
      done.catch((err: unknown) => log.debug({ role, err: (err as Error).message }, 'broker Redis connection closed before QUIT was answered'));
      return done;
    };
    connections.push(conn);
    return conn;
  };
  const mq = mqemitterRedis({ subConn: connect('mq-sub'), pubConn: connect('mq-pub') } as never);
  // mqemitter-redis re-emits connection errors here; an EventEmitter without a listener would throw
  (mq as unknown as { state: { on(event: 'error', fn: (err: Error) => void): void } }).state.on('error', () => undefined);
  return {
    // Through a key prefix: several deployments can share a Redis, and in Cluster mode the one hash
    // tag keeps the session keys in one slot (aedes-persistence-redis writes several keys at once).
    persistence: aedesPersistenceRedis({ conn: connect('sessions', clusterSafePrefix(shared.redis, shared.prefix)) } as never) as unknown as { destroy(): Promise<void> },
    mq,
    /**
     * Closes every connection at once. mqemitter-redis closes by QUIT and waits for an 'end' that a
     * connection which was reconnecting after a Redis outage may never emit: without this, aedes'
     * close (and the service's stop) could wait forever.
     */
    disconnect: () => {
      for (const conn of connections) conn.disconnect();
    },
  };
}

/** Where the service answers a hub's message that it refuses. */
function hubReplyTopic(hubId: string, target: HubInbound): string {
  if (target.kind === 'hub/claim') return hubTopic(hubId, 'hub/claim/rejected');
  return childTopic(hubId, target.childId, target.kind === 'child/csr' ? 'csr/rejected' : 'errors');
}

export class ProvisioningBroker {
  #aedes: Aedes | undefined;
  #server: TlsServer | undefined;
  readonly #sessions = new WeakMap<Client, DeviceSession>();
  /** Live operational connections by device id (for revocation and diagnostics). */
  readonly #online = new Map<string, Client>();
  readonly #issuers: X509Certificate[];
  readonly #sockets = new Set<TLSSocket>();
  #persistence: { destroy(): Promise<void> } | undefined;
  #disconnectShared: (() => void) | undefined;
  readonly #limits: ConnectionLimits;
  /**
   * Disconnect orders by device id (their sequence number), kept a minute: an order that arrives
   * while a connection of that device is still authenticating finds nothing to close, so a
   * connection authenticated across an order is checked again (a revocation must not miss it).
   */
  readonly #orders = new Map<string, number>();
  #orderSeq = 0;
  /** The order sequence number each connection was last authenticated against. */
  readonly #authenticatedAt = new WeakMap<Client, number>();
  /** Work in hand (authentications, device messages, configuration deliveries): drain() lets it finish. */
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Set by drain(): new CONNECTs are refused and new device messages answered SERVICE_STOPPING. */
  #draining = false;
  /** Connections counted in provisiond_mqtt_connections, with their session kind. */
  readonly #counted = new WeakMap<Client, string>();
  /** The listener's close, once begun (drain() begins it, stop() waits for it). */
  #serverClosed: Promise<void> | undefined;

  constructor(
    private readonly service: ProvisioningService,
    private readonly options: BrokerOptions,
    private readonly log: Logger,
  ) {
    this.#issuers = options.tls.clientCaPems.map((pem) => new X509Certificate(pem));
    this.#limits = new ConnectionLimits(options.limits, options.clock, options.metrics, log);
  }

  get port(): number {
    return (this.#server?.address() as AddressInfo | null)?.port ?? 0;
  }

  /** Whether the MQTT listener accepts connections (false before start() and from drain() on). */
  get accepting(): boolean {
    return this.#server?.listening === true && !this.#draining;
  }

  /** An error reply to a device (schemas/mqtt-error.json), counted in provisiond_mqtt_refusals_total. */
  #errorReply(err: { code: string; message: string }, extra?: { requestId?: string; topic?: string }): Buffer {
    this.options.metrics.mqttRefusals.inc({ code: err.code });
    return errorPayload(err, extra);
  }

  get connectedClients(): number {
    return this.#aedes?.connectedClients ?? 0;
  }

  async start(): Promise<void> {
    const shared = this.options.shared ? sharedBackends(this.options.shared, this.log) : undefined;
    this.#persistence = shared?.persistence;
    this.#disconnectShared = shared?.disconnect;
    const aedes = new Aedes({
      connectTimeout: this.options.connectTimeoutMs,
      drainTimeout: 30_000,
      // enforced by aedes (connection closed); coded and counted by ConnectionLimits.watchPackets
      maxTopicLevels: this.options.limits.maxTopicLevels,
      ...(shared ? { persistence: shared.persistence as never, mq: shared.mq as never } : {}),
    });
    aedes.authenticate = (client, username, password, done) => {
      const stopping = this.#draining ? Promise.reject(new ProvisioningError('SERVICE_STOPPING')) : undefined;
      this.#track(stopping ?? this.#authenticate(client, username, password)).then(
        () => done(null, true),
        (err: unknown) => {
          const code = isProvisiondError(err) ? err.code : 'INTERNAL_ERROR';
          if (!isProvisiondError(err)) this.log.error({ err, clientId: client.id }, 'authentication failed unexpectedly');
          else this.log.info({ clientId: client.id, code }, 'mqtt connect refused');
          this.options.metrics.mqttRefusals.inc({ code });
          const e = new Error(code) as AuthenticateError;
          e.returnCode = connackFor(code) as AuthenticateError['returnCode'];
          done(e, false);
        },
      );
    };
    aedes.authorizePublish = (client, packet, done) => {
      if (!client) return done(null);
      const session = this.#sessions.get(client);
      const target = session && publishTarget(session.kind, session.deviceId, packet.topic);
      const hubTarget = session?.hub && !target ? hubPublishTarget(session.deviceId, packet.topic) : undefined;
      if (session && hubTarget) {
        packet.retain = false;
        if (this.#refuseWhileDraining(packet, hubReplyTopic(session.deviceId, hubTarget), done)) return;
        const release = this.#admitMessage(client, packet, hubReplyTopic(session.deviceId, hubTarget), done);
        if (!release) return;
        this.#track(this.#handleHub(session, hubTarget, packet)).then(release, (err: unknown) => {
          this.log.error({ err, clientId: client.id, topic: packet.topic }, 'hub message failed');
          release();
        });
        return;
      }
      if (!session || !target) {
        // MQTT 3.1.1 cannot refuse a PUBLISH with a code: the connection is closed (MQTT-3.3.5-2).
        this.log.warn({ clientId: client.id, topic: packet.topic, code: 'TOPIC_FORBIDDEN' }, 'publish refused, closing connection');
        this.options.metrics.mqttRefusals.inc({ code: 'TOPIC_FORBIDDEN' });
        return done(new ProvisioningError('TOPIC_FORBIDDEN', `may not publish to ${packet.topic}`));
      }
      packet.retain = false; // device messages are commands, never stored
      const replyTopic = deviceTopic(session.deviceId, target === 'csr' ? 'csr/rejected' : 'errors');
      if (this.#refuseWhileDraining(packet, replyTopic, done)) return;
      const release = this.#admitMessage(client, packet, replyTopic, done);
      if (!release) return;
      // Handled before the PUBACK: a QoS 1 acknowledgement means the message was processed.
      this.#track(this.#handleInbound(session, target, packet)).then(release, (err: unknown) => {
        this.log.error({ err, clientId: client.id, topic: packet.topic }, 'device message failed');
        const body = this.#errorReply({ code: 'INTERNAL_ERROR', message: 'the service failed to handle this message; retry later' }, { topic: packet.topic });
        this.publish(replyTopic, body).then(release, release);
      });
    };
    aedes.authorizeSubscribe = (client, sub, done) => {
      const session = this.#sessions.get(client);
      const allowed =
        !!session && (maySubscribe(session.kind, session.deviceId, sub.topic) || (!!session.hub && session.kind === 'operational' && !!hubMaySubscribe(session.deviceId, sub.topic)));
      if (session && allowed) return done(null, this.#admitSubscription(client, session, sub.topic) ? sub : null);
      this.log.warn({ clientId: client.id, topic: sub.topic, code: 'TOPIC_FORBIDDEN' }, 'subscription refused');
      this.options.metrics.mqttRefusals.inc({ code: 'TOPIC_FORBIDDEN' });
      done(null, null); // SUBACK return code 0x80
    };
    aedes.on('subscribe', (subs, client) => {
      const session = client && this.#sessions.get(client);
      if (session?.kind !== 'operational') return;
      const configTopic = deviceTopic(session.deviceId, 'config');
      if (subs.some((s) => s.topic === configTopic && (s.qos as number) !== 128)) this.#deliverConfig(session.deviceId);
      if (session.hub) {
        for (const s of subs) {
          const m = (s.qos as number) === 128 ? undefined : hubMaySubscribe(session.deviceId, s.topic);
          if (m?.childId && m.leaf === 'config') this.#deliverChildConfig(session.deviceId, m.childId);
        }
      }
    });
    aedes.on('unsubscribe', (topics, client) => {
      const usage = client && this.#limits.usage(client);
      for (const topic of topics) usage?.subscriptions.delete(topic);
    });
    // QoS 1 messages to a connection count until its PUBACK ('ack'); past the limit it is closed
    aedes.authorizeForward = (client, packet) => this.#admitForward(client, packet);
    aedes.on('ack', (_packet, client) => {
      const usage = client && this.#limits.usage(client);
      if (usage && usage.outbound > 0) usage.outbound -= 1;
    });
    aedes.on('clientReady', (client) => {
      const session = this.#sessions.get(client);
      if (session) {
        this.#counted.set(client, session.kind);
        this.options.metrics.mqttConnections.inc({ kind: session.kind });
        this.options.metrics.mqttConnects.inc({ kind: session.kind });
      }
      // an order that came between its authentication and its registration found nothing to close
      if (session && this.#orderedSince(session.deviceId, this.#authenticatedAt.get(client) ?? 0)) return void client.close();
      if (session?.kind !== 'operational') return;
      this.#online.set(session.deviceId, client);
      // A resumed persistent session (clean = false) gets its subscriptions back without a
      // SUBSCRIBE, so no 'subscribe' event: deliver from here when config is among them.
      if (!client.clean) {
        const configTopic = deviceTopic(session.deviceId, 'config');
        // aedes' type declarations omit its persistence; this is the documented async interface.
        const persistence = (aedes as unknown as { persistence: { subscriptionsByClient(c: Client): Promise<{ topic: string }[] | null> } })
          .persistence;
        persistence
          .subscriptionsByClient(client)
          .then((subs) => {
            if (subs?.some((s) => s.topic === configTopic)) this.#deliverConfig(session.deviceId);
          })
          .catch((err: unknown) => this.log.error({ err, deviceId: session.deviceId }, 'cannot read restored subscriptions'));
      }
    });
    aedes.on('clientDisconnect', (client) => {
      const kind = this.#counted.get(client);
      if (kind !== undefined) {
        this.#counted.delete(client);
        this.options.metrics.mqttConnections.dec({ kind });
      }
      const session = this.#sessions.get(client);
      if (session && this.#online.get(session.deviceId) === client) this.#online.delete(session.deviceId);
    });
    aedes.on('clientError', (client, err) => this.log.debug({ clientId: client.id, err: err.message }, 'mqtt client error'));
    aedes.on('connectionError', (client, err) => this.log.debug({ clientId: client?.id, err: err.message }, 'mqtt connection error'));
    await aedes.listen();
    this.#aedes = aedes;
    // Disconnect orders reach every instance (the device may be connected to another one).
    await new Promise<void>((resolve) =>
      aedes.subscribe(
        CONTROL_TOPIC,
        (packet, cb) => {
          const { deviceId, afterMs } = JSON.parse(packet.payload.toString()) as { deviceId: string; afterMs?: number };
          this.#noteOrder(deviceId);
          this.#closeLocal(deviceId, afterMs);
          cb();
        },
        () => resolve(),
      ),
    );

    const { tls } = this.options;
    const server = createTlsServer(
      {
        key: tls.keyPem,
        cert: tls.certChainPem,
        ca: [...tls.clientCaPems],
        requestCert: true, // optional client certificate: bootstrap sessions have none
        rejectUnauthorized: false, // decided per session in authenticate()
        minVersion: 'TLSv1.2',
        // No stateless session tickets (TLS 1.3 then sends bare session ids, which no cache here
        // keeps: nothing is resumed). Resumption is not part of the device protocol, and ticket keys
        // live only as long as the process, so a ticket would not survive the restart that sends a
        // whole fleet back at once. Each handshake would otherwise seal two tickets (each a copy of
        // the session, the client's certificate decoded again): 0.2-0.4 ms of CPU per handshake
        // and, held, about 13 KiB per connection (docs/performance.md, "Held fleet").
        secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
      },
      (socket) => {
        // MQTT is request/answer in small packets: without this, Nagle's algorithm holds an answer
        // back until the peer's delayed ACK (tens of ms per round trip)
        socket.setNoDelay(true);
        this.#sockets.add(socket);
        socket.once('close', () => this.#sockets.delete(socket));
        this.#limits.watchPackets(aedes.handle(socket));
      },
    );
    // the connection rates are decided on the bare TCP socket: a refusal costs no handshake
    server.prependListener('connection', (socket: Socket) => {
      if (!this.#limits.admit(socket)) socket.destroy();
    });
    server.on('tlsClientError', (err) => this.log.debug({ err: err.message }, 'tls handshake failed'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#server = server;
    this.log.info({ port: this.port }, 'mqtt broker listening (TLS)');
  }

  /**
   * The first part of a stop (SIGTERM): stop accepting at once (the listener is closed, so new
   * connections are refused; a CONNECT on a connection accepted just before is refused with
   * CONNACK 3, SERVICE_STOPPING; a device message that arrives now is answered SERVICE_STOPPING
   * and not handled), let the work in hand finish for up to `graceMs` (authentications, device
   * messages with their answers, configuration deliveries), then close the devices' connections
   * cleanly (TLS close_notify and FIN after everything written; MQTT 3.1.1 has no DISCONNECT from
   * the server). Resolves with how much work was still running when the grace ran out (it goes on
   * until the store closes; the issuance commit is atomic, so it is either done or never was).
   */
  async drain(graceMs: number): Promise<{ unfinished: number }> {
    this.#draining = true;
    const aedes = this.#aedes;
    if (this.#server) this.#serverClosed ??= this.#closeListener(this.#server);
    const deadline = Date.now() + graceMs;
    const until = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)).unref());
    while (this.#inFlight.size > 0 && Date.now() < deadline) {
      await Promise.race([Promise.allSettled([...this.#inFlight]), until(deadline - Date.now())]);
    }
    const unfinished = this.#inFlight.size;
    if (unfinished > 0) this.log.warn({ unfinished, graceMs }, 'shutdown grace over with device work still running');
    // Answers published by that work reach their connections before these close: with the Redis
    // message bus they come back through it, so wait for a marker published after them.
    if (aedes) await Promise.race([this.#flushed(aedes), until(Math.min(1000, deadline - Date.now()))]);
    const sockets = [...this.#sockets];
    for (const socket of sockets) socket.end();
    const closed = Promise.all(sockets.map((s) => (s.closed ? undefined : new Promise((resolve) => s.once('close', resolve)))));
    await Promise.race([closed, until(1000)]);
    return { unfinished };
  }

  #closeListener(server: TlsServer): Promise<void> {
    return new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Resolves once a marker published now came back through the message bus (earlier messages were delivered). */
  #flushed(aedes: Aedes): Promise<void> {
    const topic = `$provisiond/flush/${aedes.id}`;
    return new Promise<void>((resolve) => {
      const onMarker = (_packet: AedesPublishPacket, cb: () => void) => {
        cb();
        aedes.unsubscribe(topic, onMarker, () => undefined);
        resolve();
      };
      aedes.subscribe(topic, onMarker, () => {
        aedes.publish({ cmd: 'publish', topic, payload: Buffer.alloc(0), qos: 0, retain: false, dup: false } as PublishPacket, () => undefined);
      });
    });
  }

  #track<T>(work: Promise<T>): Promise<T> {
    this.#inFlight.add(work);
    const done = () => void this.#inFlight.delete(work);
    work.then(done, done);
    return work;
  }

  /** While draining: answers SERVICE_STOPPING on `replyTopic` (then the PUBACK) instead of handling the message. */
  #refuseWhileDraining(packet: PublishPacket, replyTopic: string, done: (err?: Error | null) => void): boolean {
    if (!this.#draining) return false;
    const body = this.#errorReply(new ProvisioningError('SERVICE_STOPPING'), { topic: packet.topic });
    this.#track(this.publish(replyTopic, body)).then(
      () => done(null),
      () => done(null),
    );
    return true;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    const aedes = this.#aedes;
    this.#server = undefined;
    this.#aedes = undefined;
    // Stop accepting first: a device that retries while its fleet is being disconnected is refused
    // at once (and comes back to the next process) instead of costing a handshake here. The close
    // completes once aedes has disconnected every client.
    const serverClosed = server ? (this.#serverClosed ?? this.#closeListener(server)) : undefined;
    const disconnectShared = this.#disconnectShared;
    this.#disconnectShared = undefined;
    if (aedes) {
      await new Promise<void>((resolve) => {
        // with shared Redis backends, a close still waiting after 3 s is waiting on a connection:
        // cut them all (the 'end' they emit lets mqemitter-redis finish)
        const cut = disconnectShared ? setTimeout(() => {
          this.log.warn('closing the shared Redis connections took over 3 s; disconnecting them');
          disconnectShared();
          setTimeout(resolve, 1000).unref();
        }, 3000) : undefined;
        aedes.close(() => {
          clearTimeout(cut);
          resolve();
        });
      });
    }
    const persistence = this.#persistence;
    this.#persistence = undefined;
    if (persistence) {
      // bounded too: after a cut, its unsubscribe from the closed message bus never answers
      const destroyed = persistence.destroy().catch((err: unknown) => this.log.warn({ err }, 'closing the Redis session store failed'));
      await Promise.race([destroyed, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    }
    disconnectShared?.();
    if (serverClosed) {
      // connections aedes has not registered (no CONNECT yet) get 2 s
      const force = setTimeout(() => {
        for (const socket of this.#sockets) socket.destroy();
      }, 2000);
      await serverClosed;
      clearTimeout(force);
    }
  }

  /**
   * A device message about to be handled: refused (answered on `replyTopic`, PUBACK as usual, not
   * handled) when its payload is over mqtt.maxPayloadBytes or the connection has
   * mqtt.maxInflightInbound messages being handled already. Returns the function to call when the
   * message is done (it releases the slot and acknowledges), or undefined when refused.
   */
  #admitMessage(client: Client, packet: PublishPacket, replyTopic: string, done: (err?: Error | null) => void): (() => void) | undefined {
    const { maxPayloadBytes, maxInflightInbound } = this.options.limits;
    const usage = this.#limits.usage(client);
    const refuse = (err: { code: string; message: string }, limit: 'payload_size' | 'inflight_inbound') => {
      this.#limits.refused(limit, { clientId: client.id, topic: packet.topic, code: err.code }, 'device message refused');
      this.publish(replyTopic, this.#errorReply(err, { topic: packet.topic })).then(
        () => done(null),
        () => done(null),
      );
      return undefined;
    };
    const size = packet.payload.length;
    if (size > maxPayloadBytes) {
      return refuse(new ProvisioningError('PAYLOAD_TOO_LARGE', `payload of ${size} bytes exceeds ${maxPayloadBytes}`), 'payload_size');
    }
    if (usage.inbound >= maxInflightInbound) {
      const err = new BrokerError('INFLIGHT_LIMIT_EXCEEDED', `${maxInflightInbound} messages of this connection are being handled; wait for their answers`);
      return refuse(err, 'inflight_inbound');
    }
    usage.inbound += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      usage.inbound -= 1;
      done(null);
    };
  }

  /** An allowed subscription: refused (SUBACK 0x80, an error on the device's errors topic) past mqtt.maxSubscriptionsPerClient. */
  #admitSubscription(client: Client, session: DeviceSession, topic: string): boolean {
    const { subscriptions } = this.#limits.usage(client);
    const max = this.options.limits.maxSubscriptions;
    if (subscriptions.has(topic)) return true;
    if (subscriptions.size < max) {
      subscriptions.add(topic);
      return true;
    }
    const err = new BrokerError('SUBSCRIPTION_LIMIT_EXCEEDED', `this connection holds ${max} subscriptions already; ${topic} is refused`);
    this.#limits.refused('subscriptions', { clientId: client.id, topic, code: err.code }, 'subscription refused');
    this.publish(deviceTopic(session.deviceId, 'errors'), this.#errorReply(err, { topic })).catch(() => undefined);
    return false;
  }

  /** A message about to be sent to a connection: QoS 1 ones count until acknowledged; one past mqtt.maxInflightOutbound closes it. */
  #admitForward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    if (packet.qos === 0 || !this.#sessions.has(client)) return packet;
    const granted = (client as unknown as { subscriptions?: Record<string, { qos: number } | undefined> }).subscriptions?.[packet.topic];
    if (!granted || granted.qos === 0) return packet; // delivered at QoS 0: nothing to acknowledge
    const usage = this.#limits.usage(client);
    const max = this.options.limits.maxInflightOutbound;
    if (usage.outbound < max) {
      usage.outbound += 1;
      return packet;
    }
    if (this.#limits.closing(client, 'inflight_outbound', { code: 'INFLIGHT_LIMIT_EXCEEDED', max, topic: packet.topic }, 'messages not acknowledged, closing connection')) {
      setImmediate(() => client.close());
    }
    return null;
  }

  /** Publishes on behalf of the service (QoS 1, never retained). */
  publish(topic: string, payload: Buffer | string): Promise<void> {
    const aedes = this.#aedes;
    if (!aedes) return Promise.resolve();
    const packet = { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false } as PublishPacket;
    return new Promise((resolve, reject) => aedes.publish(packet, (err) => (err ? reject(err) : resolve())));
  }

  async #authenticate(client: Client, username: string | undefined, password: Buffer | undefined): Promise<void> {
    // A disconnect order for this device during the checks (revocation, release, re-provisioning)
    // may have changed what they read: check again against the changed records.
    for (let attempt = 0; attempt < 3; attempt++) {
      const seen = this.#orderSeq;
      const session = await this.#identify(client, username, password);
      if (this.#orderedSince(session.deviceId, seen)) continue;
      this.#authenticatedAt.set(client, seen);
      this.#sessions.set(client, session);
      return;
    }
    throw new ProvisioningError('DEVICE_STATE_INVALID', 'the device changed while connecting; retry');
  }

  #noteOrder(deviceId: string): void {
    const seq = ++this.#orderSeq;
    this.#orders.set(deviceId, seq);
    setTimeout(() => this.#orders.get(deviceId) === seq && this.#orders.delete(deviceId), 60_000).unref();
  }

  #orderedSince(deviceId: string, seq: number): boolean {
    return (this.#orders.get(deviceId) ?? 0) > seq;
  }

  /** Who the CONNECT is: the session its credential or certificate opens, or a coded refusal. */
  async #identify(client: Client, username: string | undefined, password: Buffer | undefined): Promise<DeviceSession> {
    const socket = client.conn as TLSSocket;
    // The certificate OpenSSL already parsed for the handshake, wrapped as is. (getPeerCertificate()
    // would build an object with three fingerprints and a copy of the key for every connection.)
    const peer = typeof socket.getPeerX509Certificate === 'function' ? socket.getPeerX509Certificate() : undefined;
    let session: DeviceSession;
    if (peer) {
      if (socket.authorized) {
        session = await this.service.authenticateOperational(client.id, peer);
      } else if (String(socket.authorizationError) === 'CERT_HAS_EXPIRED' && this.#signedByOurCa(peer)) {
        // expired but ours: the device's profile decides whether it may renew (renewal-only session)
        session = await this.service.authenticateOperational(client.id, peer, { expired: true });
      } else if (this.#signedByOurCa(peer)) {
        const reason = String(socket.authorizationError ?? 'untrusted');
        throw new ProvisioningError(reason === 'CERT_HAS_EXPIRED' ? 'CERTIFICATE_EXPIRED' : 'CERTIFICATE_UNTRUSTED', reason);
      } else {
        // not ours: a manufacturer birth certificate (zero-touch), or nothing we trust
        session = await this.service.authenticateBirth(client.id, peer);
      }
    } else {
      session = await this.service.authenticateBootstrap(client.id, username, password?.toString('utf8'));
    }
    return session;
  }

  async #handleInbound(session: DeviceSession, target: InboundTopic, packet: PublishPacket): Promise<void> {
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const id = session.deviceId;
    switch (target) {
      case 'csr': {
        const reply = await this.service.submitCsr(session, payload);
        if (reply.ok) await this.publish(deviceTopic(id, 'csr/accepted'), JSON.stringify(reply.value));
        else {
          this.log.info({ deviceId: id, code: reply.error.code }, 'csr rejected');
          await this.publish(deviceTopic(id, 'csr/rejected'), this.#errorReply(reply.error, { requestId: reply.requestId, topic: packet.topic }));
        }
        return;
      }
      case 'config/ack': {
        const reply = await this.service.acknowledge(id, payload);
        if (reply.ok) await this.publish(deviceTopic(id, 'state'), JSON.stringify(reply.value));
        else {
          this.log.info({ deviceId: id, code: reply.error.code }, 'config ack rejected');
          await this.publish(deviceTopic(id, 'errors'), this.#errorReply(reply.error, { topic: packet.topic }));
        }
        return;
      }
      case 'telemetry': {
        const reply = this.service.telemetry(payload);
        if (!reply.ok) await this.publish(deviceTopic(id, 'errors'), this.#errorReply(reply.error, { topic: packet.topic }));
        return;
      }
    }
  }

  /** TLS found the certificate expired; is it otherwise issued by our issuing CA? */
  #signedByOurCa(cert: X509Certificate): boolean {
    return this.#issuers.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
  }

  /** What the use-cases use to reach devices. */
  readonly gateway: DeviceGateway = {
    send: async (deviceId, leaf, payload, hubId) => {
      if (hubId === undefined) return this.publish(deviceTopic(deviceId, leaf), payload);
      // a child behind a hub is reached through the hub's relay topics only
      if (leaf === 'config' || leaf === 'state' || leaf === 'errors') return this.publish(childTopic(hubId, deviceId, leaf), payload);
      this.log.debug({ deviceId, hubId, leaf }, 'no relay topic for this message to a child; not sent');
    },
    disconnect: (deviceId, afterMs) => {
      // through the message bus, so that the instance the device is connected to acts
      const packet = { cmd: 'publish', topic: CONTROL_TOPIC, payload: Buffer.from(JSON.stringify({ deviceId, afterMs })), qos: 0, retain: false, dup: false } as PublishPacket;
      this.#aedes?.publish(packet, () => undefined);
    },
  };

  #closeLocal(deviceId: string, afterMs?: number): void {
    const close = () => {
      const clients = (this.#aedes as unknown as { clients?: Record<string, Client> } | undefined)?.clients;
      clients?.[deviceId]?.close();
    };
    if (afterMs) setTimeout(close, afterMs).unref();
    else close();
  }

  /** A hub's messages for itself (claims) and for its children (relayed CSR and acknowledgements). */
  async #handleHub(session: DeviceSession, target: HubInbound, packet: PublishPacket): Promise<void> {
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const hub = session.deviceId;
    if (target.kind === 'hub/claim') {
      const reply = await this.service.hubClaim(session, payload);
      if (reply.ok) await this.publish(hubTopic(hub, 'hub/claim/accepted'), JSON.stringify(reply.value));
      else await this.publish(hubTopic(hub, 'hub/claim/rejected'), this.#errorReply(reply.error, { requestId: reply.requestId, topic: packet.topic }));
      return;
    }
    const child = target.childId;
    if (target.kind === 'child/csr') {
      const reply = await this.service.submitChildCsr(session, child, payload);
      if (reply.ok) await this.publish(childTopic(hub, child, 'csr/accepted'), JSON.stringify(reply.value));
      else await this.publish(childTopic(hub, child, 'csr/rejected'), this.#errorReply(reply.error, { requestId: reply.requestId, topic: packet.topic }));
      return;
    }
    if (!(await this.service.isChildOf(hub, child))) {
      await this.publish(childTopic(hub, child, 'errors'), this.#errorReply({ code: 'TOPIC_FORBIDDEN', message: `${child} is not a child of hub ${hub}` }, { topic: packet.topic }));
      return;
    }
    const reply = await this.service.acknowledge(child, payload);
    if (reply.ok) await this.publish(childTopic(hub, child, 'state'), JSON.stringify(reply.value));
    else await this.publish(childTopic(hub, child, 'errors'), this.#errorReply(reply.error, { topic: packet.topic }));
  }

  #deliverChildConfig(hubId: string, childId: string): void {
    if (this.#draining) return; // the device gets it on its next subscription
    void this.#track(
      this.service
        .isChildOf(hubId, childId)
        .then((mine) => (mine ? this.service.pendingConfig(childId) : undefined))
        .then((jws) => (jws ? this.publish(childTopic(hubId, childId, 'config'), jws) : undefined))
        .catch((err: unknown) => this.log.error({ err, hubId, childId }, 'child config delivery failed')),
    );
  }

  #deliverConfig(deviceId: string): void {
    if (this.#draining) return; // the device gets it on its next subscription
    void this.#track(
      this.service
        .pendingConfig(deviceId)
        .then((jws) => (jws ? this.publish(deviceTopic(deviceId, 'config'), jws) : undefined))
        .catch((err: unknown) => this.log.error({ err, deviceId }, 'config delivery failed')),
    );
  }
}
