/**
 * The embedded MQTT broker: aedes on TLS. Hooks are thin: they identify the session (bootstrap
 * credential or client certificate), ask src/policy whether a topic is allowed, hand payloads to
 * the provisioning use-cases and publish their answers. Nothing here decides provisioning logic.
 */
import { X509Certificate, constants as cryptoConstants } from 'node:crypto';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { Aedes, type AuthenticateError, type Client, type PublishPacket } from 'aedes';
import aedesPersistenceRedis from 'aedes-persistence-redis';
import mqemitterRedis from 'mqemitter-redis';
import { clusterSafePrefix, createRedisClient, type RedisClient, type RedisSettings } from '../store/index.js';
import type { Logger } from 'pino';
import { isProvisiondError } from '../errors.js';
import { childTopic, deviceTopic, hubMaySubscribe, hubPublishTarget, hubTopic, maySubscribe, publishTarget, type HubInbound, type InboundTopic } from '../policy/index.js';
import { ProvisioningError, type DeviceGateway, type DeviceSession, type ProvisioningService } from '../provisioning/index.js';
import { connackFor, errorPayload } from './replies.js';

export interface BrokerOptions {
  host: string;
  port: number;
  connectTimeoutMs: number;
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

  constructor(
    private readonly service: ProvisioningService,
    private readonly options: BrokerOptions,
    private readonly log: Logger,
  ) {
    this.#issuers = options.tls.clientCaPems.map((pem) => new X509Certificate(pem));
  }

  get port(): number {
    return (this.#server?.address() as AddressInfo | null)?.port ?? 0;
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
      maxTopicLevels: 8,
      ...(shared ? { persistence: shared.persistence as never, mq: shared.mq as never } : {}),
    });
    aedes.authenticate = (client, username, password, done) => {
      this.#authenticate(client, username, password).then(
        () => done(null, true),
        (err: unknown) => {
          const code = isProvisiondError(err) ? err.code : 'INTERNAL_ERROR';
          if (!isProvisiondError(err)) this.log.error({ err, clientId: client.id }, 'authentication failed unexpectedly');
          else this.log.info({ clientId: client.id, code }, 'mqtt connect refused');
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
        this.#handleHub(session, hubTarget, packet).then(
          () => done(null),
          (err: unknown) => {
            this.log.error({ err, clientId: client.id, topic: packet.topic }, 'hub message failed');
            done(null);
          },
        );
        return;
      }
      if (!session || !target) {
        // MQTT 3.1.1 cannot refuse a PUBLISH with a code: the connection is closed (MQTT-3.3.5-2).
        this.log.warn({ clientId: client.id, topic: packet.topic, code: 'TOPIC_FORBIDDEN' }, 'publish refused, closing connection');
        return done(new ProvisioningError('TOPIC_FORBIDDEN', `may not publish to ${packet.topic}`));
      }
      packet.retain = false; // device messages are commands, never stored
      // Handled before the PUBACK: a QoS 1 acknowledgement means the message was processed.
      this.#handleInbound(session, target, packet).then(
        () => done(null),
        (err: unknown) => {
          this.log.error({ err, clientId: client.id, topic: packet.topic }, 'device message failed');
          const reply = target === 'csr' ? 'csr/rejected' : 'errors';
          const body = errorPayload({ code: 'INTERNAL_ERROR', message: 'the service failed to handle this message; retry later' }, { topic: packet.topic });
          this.publish(deviceTopic(session.deviceId, reply), body).then(
            () => done(null),
            () => done(null),
          );
        },
      );
    };
    aedes.authorizeSubscribe = (client, sub, done) => {
      const session = this.#sessions.get(client);
      if (session && maySubscribe(session.kind, session.deviceId, sub.topic)) return done(null, sub);
      if (session?.hub && session.kind === 'operational' && hubMaySubscribe(session.deviceId, sub.topic)) return done(null, sub);
      this.log.warn({ clientId: client.id, topic: sub.topic, code: 'TOPIC_FORBIDDEN' }, 'subscription refused');
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
    aedes.on('clientReady', (client) => {
      const session = this.#sessions.get(client);
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
        aedes.handle(socket);
      },
    );
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

  async stop(): Promise<void> {
    const server = this.#server;
    const aedes = this.#aedes;
    this.#server = undefined;
    this.#aedes = undefined;
    // Stop accepting first: a device that retries while its fleet is being disconnected is refused
    // at once (and comes back to the next process) instead of costing a handshake here. The close
    // completes once aedes has disconnected every client.
    const serverClosed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : undefined;
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

  /** Publishes on behalf of the service (QoS 1, never retained). */
  publish(topic: string, payload: Buffer | string): Promise<void> {
    const aedes = this.#aedes;
    if (!aedes) return Promise.resolve();
    const packet = { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false } as PublishPacket;
    return new Promise((resolve, reject) => aedes.publish(packet, (err) => (err ? reject(err) : resolve())));
  }

  async #authenticate(client: Client, username: string | undefined, password: Buffer | undefined): Promise<void> {
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
    this.#sessions.set(client, session);
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
          await this.publish(deviceTopic(id, 'csr/rejected'), errorPayload(reply.error, { requestId: reply.requestId, topic: packet.topic }));
        }
        return;
      }
      case 'config/ack': {
        const reply = await this.service.acknowledge(id, payload);
        if (reply.ok) await this.publish(deviceTopic(id, 'state'), JSON.stringify(reply.value));
        else {
          this.log.info({ deviceId: id, code: reply.error.code }, 'config ack rejected');
          await this.publish(deviceTopic(id, 'errors'), errorPayload(reply.error, { topic: packet.topic }));
        }
        return;
      }
      case 'telemetry': {
        const reply = this.service.telemetry(payload);
        if (!reply.ok) await this.publish(deviceTopic(id, 'errors'), errorPayload(reply.error, { topic: packet.topic }));
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
      else await this.publish(hubTopic(hub, 'hub/claim/rejected'), errorPayload(reply.error, { requestId: reply.requestId, topic: packet.topic }));
      return;
    }
    const child = target.childId;
    if (target.kind === 'child/csr') {
      const reply = await this.service.submitChildCsr(session, child, payload);
      if (reply.ok) await this.publish(childTopic(hub, child, 'csr/accepted'), JSON.stringify(reply.value));
      else await this.publish(childTopic(hub, child, 'csr/rejected'), errorPayload(reply.error, { requestId: reply.requestId, topic: packet.topic }));
      return;
    }
    if (!(await this.service.isChildOf(hub, child))) {
      await this.publish(childTopic(hub, child, 'errors'), errorPayload({ code: 'TOPIC_FORBIDDEN', message: `${child} is not a child of hub ${hub}` }, { topic: packet.topic }));
      return;
    }
    const reply = await this.service.acknowledge(child, payload);
    if (reply.ok) await this.publish(childTopic(hub, child, 'state'), JSON.stringify(reply.value));
    else await this.publish(childTopic(hub, child, 'errors'), errorPayload(reply.error, { topic: packet.topic }));
  }

  #deliverChildConfig(hubId: string, childId: string): void {
    this.service
      .isChildOf(hubId, childId)
      .then((mine) => (mine ? this.service.pendingConfig(childId) : undefined))
      .then((jws) => (jws ? this.publish(childTopic(hubId, childId, 'config'), jws) : undefined))
      .catch((err: unknown) => this.log.error({ err, hubId, childId }, 'child config delivery failed'));
  }

  #deliverConfig(deviceId: string): void {
    this.service
      .pendingConfig(deviceId)
      .then((jws) => (jws ? this.publish(deviceTopic(deviceId, 'config'), jws) : undefined))
      .catch((err: unknown) => this.log.error({ err, deviceId }, 'config delivery failed'));
  }
}
