/**
 * One simulated device following docs/protocol.md with mqtt.js:
 *   1. make a key pair and a CSR (its subject is ignored by the service),
 *   2. bootstrap connection (username = device id, password = bootstrap token), send the CSR,
 *      receive certificate + chain, check it against the root,
 *   3. reconnect with mutual TLS, subscribe to config/state/errors, verify the signed config,
 *      decrypt the Wi-Fi secret, apply, acknowledge every item,
 *   4. wait for state "provisioned", then stay connected (telemetry) until stopped;
 *   5. obey commands: "wipe" (forget identity and configuration), "renew" (new key, CSR over
 *      the operational connection, reconnect with the new certificate);
 *   6. after a lost connection, reconnect() opens a new operational session with the same
 *      certificate (the fleet runner's connection-drop chaos uses it).
 * Items are applied in priority order; items marked "await" are acknowledged first, before
 * the device reports itself ready.
 */
import { createPrivateKey, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import type { LookupAddress } from 'node:dns';
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIPv6 } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import type { ClaimResponse, MqttCommand, MqttCsrAccepted, MqttError, MqttState } from '../schemas/types.js';
import { makeKeyAndCsrAsync } from './csr.js';
import { MODELS, type ModelName } from './models.js';
import { DeviceProtocolError, decryptSecret, openConfigDocument, parseCertificate, topics, verifyIssuedChain } from './protocol.js';

type Bootstrap = NonNullable<ClaimResponse['bootstrap']>;

/**
 * mqtt.js emits 'error' for a connection reset or a keep-alive timeout after CONNECT; without a
 * listener that would end the whole process. The loss shows as 'close', and whatever waited for an
 * answer fails or times out.
 */
function ignoreConnectionError(): void {}

/**
 * The bootstrap connection's TLS context (trust anchor only, no client certificate), one per CA
 * PEM for the whole process: building a context with `ca` copies Node's bundled root store.
 */
const bootstrapContexts = new Map<string, SecureContext>();

function bootstrapContext(caPem: string): SecureContext {
  let context = bootstrapContexts.get(caPem);
  if (!context) {
    context = createSecureContext({ ca: caPem });
    bootstrapContexts.set(caPem, context);
  }
  return context;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** Broker host name -> addresses, resolved once per host, family and hints (a failed lookup is retried). */
const resolvedHosts = new Map<string, Promise<LookupAddress[]>>();

/**
 * A `lookup` for net.connect (passed through mqtt.js and tls.connect) that asks the resolver once
 * per broker host instead of on every connection. The connection still goes to the host name:
 * SNI and the server certificate check keep using it, and net.connect still picks among the
 * addresses (family hint of a local address, happy eyeballs) as with the default lookup.
 */
function cachedLookup(hostname: string, options: { family?: number | string; hints?: number; all?: boolean }, callback: LookupCallback): void {
  const family = options.family === 4 || options.family === 'IPv4' ? 4 : options.family === 6 || options.family === 'IPv6' ? 6 : 0;
  const hints = options.hints ?? 0;
  const key = `${family}/${hints}/${hostname}`;
  let addresses = resolvedHosts.get(key);
  if (!addresses) {
    addresses = dnsLookup(hostname, { family, hints, all: true });
    resolvedHosts.set(key, addresses);
    addresses.catch(() => resolvedHosts.delete(key));
  }
  addresses.then(
    (found) => {
      if (options.all) callback(null, found);
      else if (found[0]) callback(null, found[0].address, found[0].family);
      else callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), '');
    },
    (err: NodeJS.ErrnoException) => callback(err, ''),
  );
}

/**
 * Ends an MQTT session. A closed connection cannot flush in-flight messages: force, or end() would
 * wait forever. A graceful end waits for the acknowledgement of what is in flight (an
 * acknowledgement the device just published, say); when the connection closes meanwhile (the
 * service drops a device it revokes or re-provisions) that never comes, so stop waiting then.
 */
function endClient(client: MqttClient): Promise<void> {
  if (!client.connected) return client.endAsync(true);
  return new Promise<void>((resolve, reject) => {
    const onClose = () => resolve();
    client.once('close', onClose);
    client.endAsync(false).then(() => {
      client.off('close', onClose);
      resolve();
    }, reject);
  });
}

/**
 * mqtt.js connect with TCP_NODELAY on the socket (docs/protocol.md §20): with Nagle on, each
 * PUBACK the device sends waits for the service's delayed TCP acknowledgement (~40 ms).
 * Fails when the connection closes before the CONNACK (the service died or stopped meanwhile, or
 * the CONNACK timed out): every caller connects without automatic reconnection, and mqtt.js'
 * connectAsync would otherwise wait for a reconnection that never comes.
 */
async function connectMqtt(url: string, opts: mqtt.IClientOptions & { secureContext?: SecureContext }): Promise<MqttClient> {
  // mqtt.js hands its options to tls.connect, which takes `secureContext` (its types omit it)
  const client = await mqtt.connectAsync(url, opts, opts.reconnectPeriod !== 0);
  (client.stream as { setNoDelay?: (noDelay: boolean) => void }).setNoDelay?.(true);
  return client;
}

/** A fresh P-256 key pair and a CSR for it (the subject is ignored by the service); firmware-sim/csr.ts. */
export async function makeKeyAndCsr(deviceId: string): Promise<{ privateKey: KeyObject; keyPem: string; csrPem: string }> {
  return makeKeyAndCsrAsync(deviceId);
}

export interface SimDeviceOptions {
  deviceId: string;
  model: ModelName;
  /** From the claim; absent for a device that got its identity at the factory ("thin"). */
  bootstrap?: Bootstrap;
  /** Where the broker is and the trust anchor, for a device without a bootstrap object. */
  broker?: { mqttUrl: string; caCertificate: string };
  /** An identity installed at the factory: the device skips enrollment. */
  identity?: { keyPem: string; certPem: string; chainPems: string[] };
  /** How long to wait for each answer from the service. */
  timeoutMs?: number;
  /** Never acknowledge anything (to exercise stall detection). */
  broken?: boolean;
  /** Never acknowledge these items (the others are applied and acknowledged). */
  brokenItems?: string[];
  /** Renew the certificate by itself at two thirds of its lifetime. */
  autoRenew?: boolean;
  /** Called when the service tells the device to wipe (released or decommissioned). */
  onWipe?: (reason: string) => void;
  /** Telemetry period once provisioned; 0 sends none. */
  telemetryIntervalMs?: number;
  /**
   * Local (source) address of the device's MQTT connections, e.g. one of 127.0.0.1..127.0.0.N on
   * loopback so that a large fleet is not limited by one address's ephemeral port range.
   */
  localAddress?: string;
  /**
   * Present the issuing CA after the certificate on the mutual-TLS connection (docs/protocol.md
   * §8 accepts both forms). Default false: the certificate alone, as most firmware does, which
   * spares building a chain into the TLS context (~0.35 ms of CPU per device).
   */
  presentChain?: boolean;
  /** Subscribe in two SUBSCRIBE packets (config in the second) instead of one listing config last (§9 allows both). */
  splitSubscribe?: boolean;
}

export interface SimTimings {
  /** Bootstrap CONNECT to certificate received. */
  identityMs: number;
  /** Mutual-TLS CONNECT to state "provisioned". */
  configMs: number;
  totalMs: number;
}

export class SimDevice {
  readonly #opts: SimDeviceOptions;
  readonly #topics: ReturnType<typeof topics>;
  readonly #root: X509Certificate;
  #privateKey: KeyObject | undefined;
  readonly #broker: { mqttUrl: string; caCertificate: string };
  #keyPem = '';
  #certPem = '';
  #chainPems: string[] = [];
  /** The operational (mutual-TLS) context for the current key and certificate, reused by reconnects. */
  #tls: { keyPem: string; certPem: string; chainPem: string; context: SecureContext } | undefined;
  #client: MqttClient | undefined;
  #telemetry: NodeJS.Timeout | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #wiped = false;
  #ready = false;
  #configVersion: number | undefined;
  readonly #configWaiters: Array<() => void> = [];
  /** Acknowledgement messages sent, in order (each a list of item ids). */
  readonly acks: string[][] = [];
  /** Telemetry messages published (and their payload bytes) since this object was made. */
  telemetrySent = 0;
  telemetryBytes = 0;

  constructor(opts: SimDeviceOptions) {
    this.#opts = opts;
    this.#topics = topics(opts.deviceId);
    const broker = opts.bootstrap ?? opts.broker;
    if (!broker) throw new Error('a simulated device needs a bootstrap object or the broker');
    this.#broker = { mqttUrl: broker.mqttUrl, caCertificate: broker.caCertificate };
    this.#root = parseCertificate(broker.caCertificate);
    if (opts.identity) {
      this.#privateKey = createPrivateKey(opts.identity.keyPem);
      this.#keyPem = opts.identity.keyPem;
      this.#certPem = opts.identity.certPem;
      this.#chainPems = opts.identity.chainPems;
    }
  }

  get deviceId(): string {
    return this.#opts.deviceId;
  }

  get certificatePem(): string {
    return this.#certPem;
  }

  get keyPem(): string {
    return this.#keyPem;
  }

  get client(): MqttClient | undefined {
    return this.#client;
  }

  /** True once every "await" item was applied (the device would start normal operation). */
  get ready(): boolean {
    return this.#ready;
  }

  get wiped(): boolean {
    return this.#wiped;
  }

  /** Version of the last configuration document received and verified (also by a broken device). */
  get configVersion(): number | undefined {
    return this.#configVersion;
  }

  /** Resolves once a configuration document has been received and verified, or rejects after `timeoutMs`. */
  waitForConfig(timeoutMs = this.#timeout()): Promise<number> {
    if (this.#configVersion !== undefined) return Promise.resolve(this.#configVersion);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new DeviceProtocolError('TIMEOUT', 'no configuration document in time')), timeoutMs);
      timer.unref();
      this.#configWaiters.push(() => {
        clearTimeout(timer);
        resolve(this.#configVersion!);
      });
    });
  }

  /** Factory reset: forget key, certificate and configuration. Run again with a new bootstrap. */
  async factoryReset(bootstrap?: Bootstrap): Promise<void> {
    await this.stop();
    this.#privateKey = undefined;
    this.#keyPem = '';
    this.#certPem = '';
    this.#chainPems = [];
    this.#tls = undefined;
    this.#ready = false;
    this.#wiped = false;
    this.#configVersion = undefined;
    this.acks.length = 0;
    if (bootstrap) this.#opts.bootstrap = bootstrap;
  }

  async run(): Promise<SimTimings> {
    const t0 = performance.now();
    if (!this.#certPem) await this.enroll();
    const t1 = performance.now();
    await this.configure();
    const t2 = performance.now();
    return { identityMs: t1 - t0, configMs: t2 - t1, totalMs: t2 - t0 };
  }

  /** Steps 1-2: key, CSR, bootstrap session, certificate. */
  async enroll(): Promise<void> {
    const csrPem = await this.#makeCsr();
    const { bootstrap, deviceId } = this.#opts;
    if (!bootstrap) throw new DeviceProtocolError('NO_BOOTSTRAP', 'enrollment needs a bootstrap object from a claim');
    const client = await connectMqtt(bootstrap.mqttUrl, {
      ...this.#socketOptions(),
      clientId: bootstrap.clientId,
      username: bootstrap.username,
      password: bootstrap.token,
      secureContext: bootstrapContext(bootstrap.caCertificate),
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: this.#timeout(),
    });
    client.on('error', ignoreConnectionError);
    try {
      await client.subscribeAsync([this.#topics.csrAccepted, this.#topics.csrRejected], { qos: 1 });
      const requestId = randomBytes(8).toString('hex');
      const answer = this.#next(client, [this.#topics.csrAccepted, this.#topics.csrRejected]);
      await client.publishAsync(this.#topics.csr, JSON.stringify({ requestId, csr: csrPem }), { qos: 1 });
      const { topic, payload } = await answer;
      if (topic === this.#topics.csrRejected) {
        const err = JSON.parse(payload) as MqttError;
        throw new DeviceProtocolError(err.code, err.message);
      }
      const accepted = JSON.parse(payload) as MqttCsrAccepted;
      if (accepted.requestId !== requestId) throw new DeviceProtocolError('UNEXPECTED_ANSWER', 'requestId does not match');
      const leaf = new X509Certificate(accepted.certificate);
      verifyIssuedChain(leaf, accepted.chain, this.#root);
      if (!leaf.checkPrivateKey(this.#privateKey!)) throw new DeviceProtocolError('CERT_KEY_MISMATCH', 'certificate is not for my key');
      if (!(leaf.subjectAltName ?? '').includes(`urn:provisiond:device:${deviceId}`)) {
        throw new DeviceProtocolError('CERT_WRONG_DEVICE', 'certificate does not name this device');
      }
      this.#certPem = accepted.certificate;
      this.#chainPems = accepted.chain;
    } finally {
      await endClient(client);
    }
  }

  /**
   * Steps 3-4: operational session, config, acknowledgement, "provisioned". With
   * `waitForProvisioned` false (a reconnect of a device that is done) it returns once subscribed.
   */
  async configure(waitForProvisioned = true): Promise<void> {
    const { deviceId } = this.#opts;
    const model = MODELS[this.#opts.model];
    const client = await connectMqtt(this.#broker.mqttUrl, {
      ...this.#socketOptions(),
      clientId: deviceId,
      secureContext: this.#operationalContext(),
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: this.#timeout(),
    });
    this.#client = client;
    client.on('error', ignoreConnectionError);
    const provisioned = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new DeviceProtocolError('TIMEOUT', 'not provisioned in time')), this.#timeout() * 2);
      timer.unref();
      // without automatic reconnection a closed connection will not bring "provisioned" any more
      client.once('close', () => {
        clearTimeout(timer);
        reject(new DeviceProtocolError('CONNECTION_CLOSED', 'the connection closed before the device was provisioned'));
      });
      client.on('message', (topic, buf) => {
        const payload = buf.toString('utf8');
        if (topic === this.#topics.config) {
          this.#onConfig(client, payload, model).catch((err: unknown) => {
            clearTimeout(timer);
            reject(err instanceof Error ? err : new Error(String(err)));
          });
        } else if (topic === this.#topics.state) {
          const state = JSON.parse(payload) as MqttState;
          if (state.state === 'provisioned') {
            clearTimeout(timer);
            resolve();
          }
        } else if (topic === this.#topics.errors) {
          const err = JSON.parse(payload) as MqttError;
          clearTimeout(timer);
          reject(new DeviceProtocolError(err.code, err.message));
        } else if (topic === this.#topics.commands) {
          const cmd = JSON.parse(payload) as MqttCommand;
          if (cmd.command === 'wipe') this.#wipe(cmd.reason);
          else if (cmd.command === 'renew') this.renew().catch(() => undefined);
        }
      });
    });
    // Handled from the start: when a subscription below fails (the connection dropped), nobody
    // awaits `provisioned` any more and its timer must not end as an unhandled rejection.
    provisioned.catch(() => undefined);
    // state, errors and commands first, config last: subscribing to config triggers its (re-)delivery.
    const first = [this.#topics.state, this.#topics.errors, this.#topics.commands, this.#topics.csrAccepted, this.#topics.csrRejected];
    if (this.#opts.splitSubscribe) {
      await client.subscribeAsync(first, { qos: 1 });
      await client.subscribeAsync(this.#topics.config, { qos: 1 });
    } else {
      // one SUBSCRIBE packet with config listed last (docs/protocol.md §9): one round trip fewer
      await client.subscribeAsync([...first, this.#topics.config], { qos: 1 });
    }
    if (this.#opts.broken || this.#opts.brokenItems?.length || !waitForProvisioned) return;
    await provisioned;
    this.#scheduleRenewal();
    this.#startTelemetry(client);
  }

  /**
   * A new operational session after the connection was lost (network cut, broker restart): the
   * same certificate, subscriptions again, telemetry resumed. Resolves once subscribed.
   */
  async reconnect(): Promise<void> {
    if (!this.#certPem) throw new DeviceProtocolError('NO_IDENTITY', 'reconnecting needs a certificate');
    await this.stop();
    await this.configure(false);
    this.#scheduleRenewal();
    this.#startTelemetry(this.#client!);
  }

  #telemetrySeq = 0;

  #startTelemetry(client: MqttClient): void {
    const every = this.#opts.telemetryIntervalMs ?? 0;
    if (every <= 0 || this.#opts.broken || this.#opts.brokenItems?.length) return;
    if (this.#telemetry) clearInterval(this.#telemetry);
    const model = MODELS[this.#opts.model];
    this.#telemetry = setInterval(() => {
      if (!client.connected) return;
      const payload = JSON.stringify(model.telemetry(this.#telemetrySeq++));
      this.telemetrySent++;
      this.telemetryBytes += Buffer.byteLength(payload);
      client.publish(this.#topics.telemetry, payload, { qos: 0 });
    }, every);
    this.#telemetry.unref();
  }

  /**
   * Certificate renewal over the operational connection: a new key and CSR on devices/<id>/csr,
   * the answer on csr/accepted, then a reconnect with the new certificate.
   */
  async renew(): Promise<void> {
    const client = this.#client;
    if (!client) throw new DeviceProtocolError('NOT_CONNECTED', 'renewal needs the operational connection');
    const oldKey = { key: this.#privateKey, pem: this.#keyPem };
    const csrPem = await this.#makeCsr();
    const requestId = randomBytes(8).toString('hex');
    const answer = this.#next(client, [this.#topics.csrAccepted, this.#topics.csrRejected]);
    await client.publishAsync(this.#topics.csr, JSON.stringify({ requestId, csr: csrPem }), { qos: 1 });
    const { topic, payload } = await answer;
    if (topic === this.#topics.csrRejected) {
      this.#privateKey = oldKey.key;
      this.#keyPem = oldKey.pem;
      const err = JSON.parse(payload) as MqttError;
      throw new DeviceProtocolError(err.code, err.message);
    }
    const accepted = JSON.parse(payload) as MqttCsrAccepted;
    const leaf = new X509Certificate(accepted.certificate);
    verifyIssuedChain(leaf, accepted.chain, this.#root);
    if (!leaf.checkPrivateKey(this.#privateKey!)) throw new DeviceProtocolError('CERT_KEY_MISMATCH', 'certificate is not for my key');
    this.#certPem = accepted.certificate;
    this.#chainPems = accepted.chain;
    // reconnect with the new identity (the old certificate is superseded)
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    if (this.#telemetry) clearInterval(this.#telemetry);
    this.#client = undefined;
    await endClient(client);
    await this.configure(false);
    this.#scheduleRenewal();
    this.#startTelemetry(this.#client!);
  }

  /** Renew at two thirds of the certificate's lifetime (timers are capped at 24 days and re-armed). */
  #scheduleRenewal(): void {
    if (!this.#opts.autoRenew || !this.#certPem) return;
    const cert = new X509Certificate(this.#certPem);
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    const at = from + ((to - from) * 2) / 3;
    const wait = Math.max(0, Math.min(at - Date.now(), 24 * 86_400_000));
    this.#renewTimer = setTimeout(() => {
      if (Date.now() >= at) this.renew().catch(() => undefined);
      else this.#scheduleRenewal();
    }, wait);
    this.#renewTimer.unref();
  }

  #wipe(reason: string): void {
    this.#wiped = true;
    this.#privateKey = undefined;
    this.#keyPem = '';
    this.#certPem = '';
    this.#chainPems = [];
    this.#tls = undefined;
    this.#ready = false;
    this.#opts.onWipe?.(reason);
    void this.stop();
  }

  async stop(): Promise<void> {
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    if (this.#telemetry) clearInterval(this.#telemetry);
    const client = this.#client;
    this.#client = undefined;
    if (client) await endClient(client);
  }

  async #onConfig(client: MqttClient, jws: string, model: (typeof MODELS)[ModelName]): Promise<void> {
    const doc = await openConfigDocument(jws, this.#root, this.#opts.deviceId);
    this.#configVersion = doc.version;
    for (const wake of this.#configWaiters.splice(0)) wake();
    if (this.#opts.broken) return;
    const skip = new Set(this.#opts.brokenItems ?? []);
    type Ack = { id: string; status: 'applied' | 'failed'; error?: string };
    const outcome = async (item: (typeof doc.items)[number]): Promise<Ack> => {
      try {
        const secret =
          item.type === 'network' && item.data.wifi.secretJwe ? await decryptSecret(item.data.wifi.secretJwe, this.#privateKey!) : undefined;
        model.apply(item, secret);
        return { id: item.id, status: 'applied' };
      } catch (err) {
        return { id: item.id, status: 'failed', error: (err as Error).message.slice(0, 200) };
      }
    };
    const ordered = [...doc.items].filter((i) => !skip.has(i.id)).sort((a, b) => a.priority - b.priority || a.id.localeCompare(b.id));
    const send = async (acks: Ack[]) => {
      if (acks.length === 0) return;
      this.acks.push(acks.map((a) => a.id));
      await client.publishAsync(this.#topics.configAck, JSON.stringify({ version: doc.version, items: acks }), { qos: 1 });
    };
    // "await" items first: the device reports itself ready only once they are applied
    const first: Ack[] = [];
    for (const item of ordered.filter((i) => i.await)) first.push(await outcome(item));
    await send(first);
    this.#ready = first.every((a) => a.status === 'applied');
    const rest: Ack[] = [];
    for (const item of ordered.filter((i) => !i.await)) rest.push(await outcome(item));
    await send(rest);
  }

  async #makeCsr(): Promise<string> {
    const made = await makeKeyAndCsr(this.#opts.deviceId);
    this.#privateKey = made.privateKey;
    this.#keyPem = made.keyPem;
    return made.csrPem;
  }

  #timeout(): number {
    return this.#opts.timeoutMs ?? 15_000;
  }

  /**
   * The mutual-TLS context: key, certificate (+ issuing CA with `presentChain`), trust anchor. Built once per identity
   * and kept for reconnects; a new key or certificate (renewal, enrollment after a reset) gets a
   * new one. The server is verified as before (tls.connect checks chain and host name).
   */
  #operationalContext(): SecureContext {
    const chainPem = this.#opts.presentChain ? (this.#chainPems[0] ?? '') : '';
    const cached = this.#tls;
    if (cached && cached.keyPem === this.#keyPem && cached.certPem === this.#certPem && cached.chainPem === chainPem) return cached.context;
    const context = createSecureContext({ key: this.#keyPem, cert: this.#certPem + chainPem, ca: this.#broker.caCertificate });
    this.#tls = { keyPem: this.#keyPem, certPem: this.#certPem, chainPem, context };
    return context;
  }

  /**
   * Socket options for mqtt.js (passed on to tls.connect): the broker host resolved once per
   * process (cachedLookup), and the local address, when set.
   */
  #socketOptions(): Record<string, unknown> {
    const localAddress = this.#opts.localAddress;
    if (!localAddress) return { lookup: cachedLookup };
    // the broker host may resolve to ::1 first; a 127.x source address needs an IPv4 destination
    return { lookup: cachedLookup, localAddress, family: isIPv6(localAddress) ? 6 : 4 };
  }

  /** The next message on one of `wanted`, or a timeout. */
  #next(client: MqttClient, wanted: string[]): Promise<{ topic: string; payload: string }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        client.off('message', onMessage);
        reject(new DeviceProtocolError('TIMEOUT', `no answer on ${wanted.join(', ')}`));
      }, this.#timeout());
      const onMessage = (topic: string, buf: Buffer) => {
        if (!wanted.includes(topic)) return;
        clearTimeout(timer);
        client.off('message', onMessage);
        resolve({ topic, payload: buf.toString('utf8') });
      };
      client.on('message', onMessage);
    });
  }
}
