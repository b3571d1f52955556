/**
 * The composition root: the one place that builds the service from its configuration.
 * build (store -> CA -> provisioning -> broker -> API), start in that order, stop in reverse.
 */
import { mkdir } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join, relative, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { EventBus, EventStreams, RedisEventRelay, WebhookNotifier, forwardToWebhooks, type ServiceEvent } from './alerts/index.js';
import { buildApi } from './api/index.js';
import { AuditTrail } from './audit/index.js';
import { createLogger } from './logging.js';
import { ProvisioningBroker } from './broker/index.js';
import { CertificateAuthority } from './ca/index.js';
import { systemClock, type Clock } from './clock.js';
import type { Config } from './config/index.js';
import { startEstServer } from './est/index.js';
import { generateClaimCode } from './factory/claim-codes.js';
import { Metrics, countRefusedClaims, observeDeviceEvents, timeStore } from './metrics/index.js';
import { DashboardData, DashboardSessions } from './provisioning/dashboard.js';
import {
  ApiKeys,
  AuditLog,
  BootstrapTokens,
  ClaimCodeHasher,
  ConfigSigner,
  DeviceImport,
  DeviceWriter,
  FactoryLine,
  FleetReports,
  GatewayRelay,
  Lifecycle,
  Profiles,
  ProvisioningService,
  SecretBox,
  Tenants,
  checkSharedMaterial,
  loadOrCreateSecret,
  sweepExpiredTokens,
  type ProvisioningCore,
} from './provisioning/index.js';
import { createAjv } from './schemas.js';
import { RedisAttemptLimiter, RedisRateLimiter, StoreError, clusterSafePrefix, createRedisClient, createStore, describeRedis, type RedisSettings, type Store, type StoreConfig } from './store/index.js';
import { MemoryAttemptLimiter, MemoryRateLimiter, SERVICE_TENANT, type AttemptLimiter, type RateLimiter } from './policy/index.js';

export interface RunningService {
  readonly config: Config;
  readonly store: Store;
  readonly ca: CertificateAuthority;
  readonly service: ProvisioningService;
  readonly lifecycle: Lifecycle;
  readonly profiles: Profiles;
  readonly tenants: Tenants;
  readonly apiKeys: ApiKeys;
  readonly bus: EventBus;
  readonly webhooks: WebhookNotifier;
  readonly broker: ProvisioningBroker;
  /** This instance's metrics (GET /metrics). */
  readonly metrics: Metrics;
  /** The Fastify instance (tests use inject()). */
  readonly api: FastifyInstance;
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:8080 */
  readonly httpUrl: string;
  readonly httpPort: number;
  readonly mqttPort: number;
  /** The EST (RFC 7030) HTTPS port, when enabled. */
  readonly estPort: number | undefined;
  /** Set on the first start when an admin key was generated. */
  readonly initialAdminKeyFile: string | undefined;
  /**
   * Stops the service (what SIGTERM does): every listener stops accepting at once, the work in
   * hand (HTTP requests, device messages and their answers, EST enrolments) gets up to
   * shutdownGraceSeconds to finish, the devices' connections are closed, then the rest stops in
   * the reverse order of the start, the store last (flushed and closed).
   */
  stop(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  clock?: Clock;
}

/** The store a configuration names (also used by `provisiond store copy --from config`). */
export function storeConfigOf(config: Config): StoreConfig {
  return config.store.kind === 'redis'
    ? { kind: 'redis', prefix: config.store.redisPrefix, ...redisSettings(config) }
    : { kind: 'sqlite', file: join(resolve(config.dataDir), 'provisiond.db') };
}

/** The Redis connection settings of a Redis store configuration. */
function redisSettings(config: Config): RedisSettings {
  const s = config.store;
  return {
    url: s.redisUrl!,
    topology: s.redisTopology,
    ...(s.redisSentinels ? { sentinels: s.redisSentinels } : {}),
    sentinelName: s.redisSentinelName,
    ...(s.redisSentinelPassword ? { sentinelPassword: s.redisSentinelPassword } : {}),
    ...(s.redisClusterNodes ? { clusterNodes: s.redisClusterNodes } : {}),
  };
}

export async function startService(config: Config, options: StartOptions = {}): Promise<RunningService> {
  // redaction and serializers that keep secrets out of the logs (src/logging.ts)
  const log = options.logger ?? createLogger(config.logLevel);
  const clock = options.clock ?? systemClock;
  const dataDir = resolve(config.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const stack: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const stop of stack.reverse()) await stop().catch((err: unknown) => log.error({ err }, 'error while stopping'));
    stack.length = 0;
  };
  // the first part of a stop, all at once: stop accepting, let the work in hand finish within the grace
  const drains: ((graceMs: number) => Promise<void>)[] = [];
  let stopping = false;
  const stopGracefully = async () => {
    stopping = true;
    const graceMs = config.shutdownGraceSeconds * 1000;
    const begun = Date.now();
    await Promise.all(drains.splice(0).map((drain) => drain(graceMs).catch((err: unknown) => log.error({ err }, 'error while draining'))));
    log.info({ drainedMs: Date.now() - begun }, 'stopped accepting; work in hand done');
    await stopAll();
  };

  try {
    // store
    const redis = config.store.kind === 'redis' ? redisSettings(config) : undefined;
    // one registry per running service (tests run many in one process)
    const metrics = new Metrics();
    // every store call timed (provisiond_store_operation_seconds), in this one place
    const store = timeStore(createStore(storeConfigOf(config)), metrics);
    await store.start();
    metrics.countDevicesWith(() => store.countDevicesByState());
    stack.push(() => store.stop());
    // the audit log: every identity action, and every key the service creates or encrypts
    const audit = new AuditTrail(store, clock, log.child({ component: 'audit' }));
    const keyPassphrase = config.ca.keyPassphrase;
    if (!keyPassphrase) log.warn({ dataDir }, 'CA keys and service secrets are stored unencrypted; set ca.keyPassphrase (PROVISIOND_CA__KEY_PASSPHRASE) to encrypt them');
    const onKeyEvent = async (e: { action: 'key.generate' | 'key.encrypt' | 'key.discard'; name: string; file: string }) => {
      if (e.action === 'key.encrypt') log.warn({ file: e.file }, 'encrypted a plaintext key file with ca.keyPassphrase');
      else if (e.action === 'key.discard') log.warn({ file: e.file }, 'set aside a CA key whose creation was interrupted (no certificate); creating it again');
      else log.info({ file: e.file, encrypted: !!keyPassphrase }, 'generated a key');
      await audit.record(
        audit.entry({ tenantId: SERVICE_TENANT, actor: 'system', action: e.action, target: `key:${relative(dataDir, e.file)}`, details: { name: e.name, encrypted: !!keyPassphrase } }),
      );
    };

    // certificate authority and the service's own identities
    const external =
      config.ca.issuingCertFile && config.ca.issuingKeyFile && config.ca.rootCertFile
        ? { issuingCertFile: config.ca.issuingCertFile, issuingKeyFile: config.ca.issuingKeyFile, rootCertFile: config.ca.rootCertFile }
        : undefined;
    const ca = new CertificateAuthority({
      dir: join(dataDir, 'ca'),
      organization: config.ca.organization,
      deviceValidityDays: config.ca.deviceCertValidityDays,
      clock,
      ...(external ? { external } : {}),
      ...(keyPassphrase ? { keyPassphrase } : {}),
      onKeyEvent,
    });
    await ca.start();
    const host = config.publicHostname;
    const hostnames = [...new Set([host, 'localhost'].filter((h) => !isIP(h)))];
    const ipAddresses = [...new Set(['127.0.0.1', '::1', ...(isIP(host) ? [host] : [])])];
    const serverIdentity = await ca.serviceIdentity('mqtt-server', { kind: 'server', hostnames, ipAddresses });
    const signerIdentity = await ca.serviceIdentity('config-signer', { kind: 'signer', commonName: `${config.ca.organization} Config Signer` });

    // provisioning
    const secretsDir = join(dataDir, 'secrets');
    const [pepper, tokenKey, boxKey] = await Promise.all([
      loadOrCreateSecret(secretsDir, 'claim-code-pepper', { passphrase: keyPassphrase, onKeyEvent }),
      loadOrCreateSecret(secretsDir, 'bootstrap-token-key', { passphrase: keyPassphrase, onKeyEvent }),
      loadOrCreateSecret(secretsDir, 'network-secret-key', { passphrase: keyPassphrase, onKeyEvent }),
    ]);
    await checkSharedMaterial(
      store,
      {
        ca: ca.chainPems.join(''),
        'claim-code-pepper': pepper,
        'bootstrap-token-key': tokenKey,
        'network-secret-key': boxKey,
      },
      dataDir,
    );
    let mqttUrl = '';
    // the claim throttle: counted in Redis when several instances share it, else in process
    const limits = { maxFailures: config.claims.maxFailedAttempts, windowSeconds: config.claims.lockoutSeconds };
    let claimLimiter: AttemptLimiter = new MemoryAttemptLimiter(clock, limits);
    // the HTTP request-rate buckets: likewise shared through Redis by several instances
    let rateLimiter: RateLimiter = new MemoryRateLimiter(clock);
    if (redis) {
      const conn = createRedisClient(redis, { lazyConnect: true, connectTimeout: 3000, commandTimeout: 5000, maxRetriesPerRequest: 1, enableOfflineQueue: false });
      conn.on('error', (err: Error) => log.debug({ err: err.message }, 'claim throttle Redis connection error'));
      stack.push(async () => void (await conn.quit().catch(() => conn.disconnect())));
      await conn.connect().catch((err: unknown) => {
        throw new StoreError('STORE_UNAVAILABLE', `Redis claim throttle: start (${describeRedis(redis)}) failed: ${(err as Error).message}`, { cause: err });
      });
      claimLimiter = new RedisAttemptLimiter(conn, clusterSafePrefix(redis, config.store.redisPrefix), clock, limits);
      rateLimiter = new RedisRateLimiter(conn, clusterSafePrefix(redis, config.store.redisPrefix), clock);
    }
    claimLimiter = countRefusedClaims(claimLimiter, metrics);
    const ajv = createAjv();
    const gateway = new GatewayRelay();
    // events: with several instances relayed through Redis, so every instance's SSE streams see all
    const relay = redis ? new RedisEventRelay(redis, config.store.redisPrefix, log.child({ component: 'events' })) : undefined;
    const bus = new EventBus({
      clock,
      log: log.child({ component: 'events' }),
      ...(relay ? { instance: relay.instance, onPublish: (e: ServiceEvent) => relay.relay(e) } : {}),
    });
    stack.push(async () => bus.close());
    const stopObserving = observeDeviceEvents(bus, metrics, (id) => store.getDevice(id));
    stack.push(async () => stopObserving());
    if (relay) {
      stack.push(() => relay.stop());
      await relay.start(bus);
    }
    const profiles = new Profiles(store, clock, ajv, config.provisioning.securityPolicy);
    const core: ProvisioningCore = {
      store,
      writer: new DeviceWriter(store, clock),
      issuer: ca,
      clock,
      ajv,
      codes: new ClaimCodeHasher(pepper),
      tokens: new BootstrapTokens(tokenKey, `provisiond:${host}`, clock),
      signer: new ConfigSigner(signerIdentity.keyPem, [signerIdentity.certPem, ...signerIdentity.chainPems]),
      box: new SecretBox(boxKey),
      profiles,
      gateway,
      events: { emit: (e) => void bus.publish(e) },
      claimLimiter,
      audit,
      settings: {
        tokenTtlSeconds: config.bootstrap.tokenTtlSeconds,
        mqttUrl: () => mqttUrl,
        defaultNetwork: config.provisioning.defaultNetwork,
        securityPolicy: config.provisioning.securityPolicy,
        maxPayloadBytes: config.mqtt.maxPayloadBytes,
      },
    };
    const service = new ProvisioningService(core);
    const lifecycle = new Lifecycle(core, service);
    const apiKeys = new ApiKeys(store, clock, audit);
    const tenants = new Tenants(store, apiKeys, profiles, clock, { provisionalWindowDays: config.provisioning.provisionalWindowDays }, core.box);
    await tenants.ensureServiceTenant();
    const initialAdminKeyFile = await apiKeys.ensureAdmin(dataDir, config.adminApiKey);
    if (initialAdminKeyFile) log.warn({ file: initialAdminKeyFile }, 'generated the initial admin API key; read it from this file (mode 0600)');

    // alerts: tenant webhooks (with retries) for the alert-worthy events
    const webhooks = new WebhookNotifier({
      clock,
      log: log.child({ component: 'webhooks' }),
      maxAttempts: config.alerts.webhookMaxAttempts,
      baseDelayMs: config.alerts.webhookBaseDelayMs,
      timeoutMs: config.alerts.webhookTimeoutMs,
    });
    const stopForwarding = forwardToWebhooks(bus, webhooks, {
      targetOf: (tenantId) => tenants.webhookOf(tenantId),
      types: config.alerts.webhookEvents,
      log: log.child({ component: 'webhooks' }),
    });
    stack.push(async () => {
      stopForwarding();
      webhooks.stop();
    });

    // broker
    const broker = new ProvisioningBroker(
      service,
      {
        host: config.mqtt.host,
        port: config.mqtt.port,
        connectTimeoutMs: config.mqtt.connectTimeoutMs,
        limits: {
          connectionRatePerAddress: { perSecond: config.mqtt.connectionRatePerAddressPerSecond, burst: config.mqtt.connectionRatePerAddressBurst },
          connectionRate: { perSecond: config.mqtt.connectionRatePerSecond, burst: config.mqtt.connectionRateBurst },
          maxPayloadBytes: config.mqtt.maxPayloadBytes,
          maxTopicLevels: config.mqtt.maxTopicLevels,
          maxInflightInbound: config.mqtt.maxInflightInbound,
          maxInflightOutbound: config.mqtt.maxInflightOutbound,
          maxSubscriptions: config.mqtt.maxSubscriptionsPerClient,
        },
        metrics,
        clock,
        ...(redis ? { shared: { redis, prefix: `${config.store.redisPrefix}mqtt:` } } : {}),
        tls: {
          keyPem: serverIdentity.keyPem,
          certChainPem: [serverIdentity.certPem, ...serverIdentity.chainPems.slice(0, -1)].join(''),
          clientCaPems: ca.chainPems,
        },
      },
      log.child({ component: 'broker' }),
    );
    await broker.start();
    stack.push(() => broker.stop());
    drains.push(async (graceMs) => void (await broker.drain(graceMs)));
    gateway.target = broker.gateway;
    stack.push(async () => {
      gateway.target = { send: async () => undefined, disconnect: () => undefined };
    });
    // EST (RFC 7030) for standard enrollment clients, on its own HTTPS port, with the broker's certificate
    let estPort: number | undefined;
    if (config.est.enabled) {
      const est = await startEstServer({
        service,
        ca,
        tls: {
          keyPem: serverIdentity.keyPem,
          certChainPem: [serverIdentity.certPem, ...serverIdentity.chainPems.slice(0, -1)].join(''),
          clientCaPems: ca.chainPems,
        },
        host: config.est.host ?? config.http.host,
        port: config.est.port,
        log: log.child({ component: 'est' }),
      });
      stack.push(() => est.stop());
      drains.push(() => est.stop()); // stops accepting at once; enrolments in flight get 2 s
      estPort = est.port;
    }
    const hostForUrl = isIP(host) === 6 ? `[${host}]` : host;
    mqttUrl = `mqtts://${hostForUrl}:${config.mqtt.publicPort ?? broker.port}`;

    // HTTP API
    const streams = new EventStreams(bus);
    const api = buildApi({
      service,
      lifecycle,
      profiles,
      tenants,
      apiKeys,
      streams,
      reports: new FleetReports(store, clock),
      dashboard: { sessions: new DashboardSessions(apiKeys, store, clock), data: new DashboardData(store, clock) },
      imports: new DeviceImport(core, () => generateClaimCode()),
      factory: new FactoryLine(core),
      auditLog: new AuditLog(store),
      ajv,
      ca,
      logger: log.child({ component: 'api' }),
      bodyLimitBytes: config.http.bodyLimitBytes,
      health: () => ({ mqttClients: broker.connectedClients }),
      readiness: async () => {
        if (stopping) return 'the service is stopping';
        if (!broker.accepting) return 'the MQTT listener is not up';
        return store.ping().then(
          () => undefined,
          // the code only: the probe is unauthenticated, the message may name the backend
          (err: unknown) => `the store does not answer (${String((err as { code?: unknown }).code ?? 'error')})`,
        );
      },
      metrics,
      rateLimits: {
        limiter: rateLimiter,
        client: { perSecond: config.http.rateLimitPerClientPerSecond, burst: config.http.rateLimitPerClientBurst },
        tenant: { perSecond: config.http.rateLimitPerTenantPerSecond, burst: config.http.rateLimitPerTenantBurst },
        clock,
      },
    });
    streams.attach(api);
    await api.listen({ host: config.http.host, port: config.http.port });
    let apiClosed: Promise<void> | undefined;
    const closeApi = () => (apiClosed ??= api.close());
    stack.push(() => closeApi());
    drains.push(async (graceMs) => {
      // Fastify's close: the listener closes, a request on a kept-alive connection is answered 503
      // (Connection: close), requests in flight finish; past the grace their connections are cut
      const closing = closeApi();
      if (await settlesWithin(closing, graceMs)) return;
      log.warn({ graceMs }, 'shutdown grace over with HTTP requests still running; closing their connections');
      api.server.closeAllConnections();
      await closing;
    });

    // stall detection
    const scan = setInterval(() => {
      lifecycle.scanStalls().catch((err: unknown) => log.error({ err }, 'stall scan failed'));
    }, config.provisioning.stallScanIntervalSeconds * 1000);
    scan.unref();
    stack.push(async () => clearInterval(scan));
    // expired, unused bootstrap credentials: deleted, so abandoned claims leave nothing behind
    let sweeping = false;
    const sweep = setInterval(() => {
      if (sweeping) return;
      sweeping = true;
      sweepExpiredTokens(store, clock)
        .then(
          (removed) => {
            if (removed.length === 0) return;
            metrics.bootstrapTokensExpired.inc(removed.length);
            log.info({ count: removed.length, deviceIds: [...new Set(removed.map((t) => t.deviceId))].slice(0, 20) }, 'deleted expired bootstrap credentials');
          },
          (err: unknown) => log.error({ err }, 'bootstrap credential sweep failed'),
        )
        .finally(() => (sweeping = false));
    }, config.bootstrap.sweepIntervalSeconds * 1000);
    sweep.unref();
    stack.push(async () => clearInterval(sweep));
    const address = api.server.address();
    const httpPort = typeof address === 'object' && address ? address.port : config.http.port;
    const httpHost = config.http.host === '0.0.0.0' || config.http.host === '::' ? '127.0.0.1' : config.http.host;

    log.info({ http: httpPort, mqtt: broker.port, est: estPort, dataDir }, 'provisiond started');
    return {
      config,
      store,
      ca,
      service,
      lifecycle,
      profiles,
      tenants,
      apiKeys,
      bus,
      webhooks,
      broker,
      metrics,
      api,
      httpUrl: `http://${isIP(httpHost) === 6 ? `[${httpHost}]` : httpHost}:${httpPort}`,
      httpPort,
      mqttPort: broker.port,
      estPort,
      initialAdminKeyFile,
      stop: stopGracefully,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** Whether `work` settles within `ms`. */
async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([work.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
