/**
 * The composition root: the one place that builds the service from its configuration.
 * build (store -> CA -> provisioning -> broker -> API), start in that order, stop in reverse.
 */
import { mkdir } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { buildApi } from './api/index.js';
import { ProvisioningBroker } from './broker/index.js';
import { CertificateAuthority } from './ca/index.js';
import { systemClock, type Clock } from './clock.js';
import type { Config } from './config/index.js';
import {
  ApiKeys,
  BootstrapTokens,
  ClaimCodeHasher,
  ConfigSigner,
  ProvisioningService,
  loadOrCreateSecret,
} from './provisioning/index.js';
import { createAjv } from './schemas.js';
import { createStore, type Store } from './store/index.js';

export interface RunningService {
  readonly config: Config;
  readonly store: Store;
  readonly ca: CertificateAuthority;
  readonly service: ProvisioningService;
  readonly apiKeys: ApiKeys;
  readonly broker: ProvisioningBroker;
  /** The Fastify instance (tests use inject()). */
  readonly api: FastifyInstance;
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:8080 */
  readonly httpUrl: string;
  readonly httpPort: number;
  readonly mqttPort: number;
  /** Set on the first start when an admin key was generated. */
  readonly initialAdminKeyFile: string | undefined;
  stop(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  clock?: Clock;
}

export async function startService(config: Config, options: StartOptions = {}): Promise<RunningService> {
  const log = options.logger ?? pino({ level: config.logLevel });
  const clock = options.clock ?? systemClock;
  const dataDir = resolve(config.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const stack: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const stop of stack.reverse()) await stop().catch((err: unknown) => log.error({ err }, 'error while stopping'));
    stack.length = 0;
  };

  try {
    // store
    const store = createStore({ kind: 'sqlite', file: join(dataDir, 'provisiond.db') });
    await store.start();
    stack.push(() => store.stop());

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
    });
    await ca.start();
    const host = config.publicHostname;
    const hostnames = [...new Set([host, 'localhost'].filter((h) => !isIP(h)))];
    const ipAddresses = [...new Set(['127.0.0.1', '::1', ...(isIP(host) ? [host] : [])])];
    const serverIdentity = await ca.serviceIdentity('mqtt-server', { kind: 'server', hostnames, ipAddresses });
    const signerIdentity = await ca.serviceIdentity('config-signer', { kind: 'signer', commonName: `${config.ca.organization} Config Signer` });

    // provisioning
    const secretsDir = join(dataDir, 'secrets');
    const [pepper, tokenKey] = await Promise.all([
      loadOrCreateSecret(secretsDir, 'claim-code-pepper'),
      loadOrCreateSecret(secretsDir, 'bootstrap-token-key'),
    ]);
    let mqttUrl = '';
    const service = new ProvisioningService({
      store,
      issuer: ca,
      clock,
      ajv: createAjv(),
      codes: new ClaimCodeHasher(pepper),
      tokens: new BootstrapTokens(tokenKey, `provisiond:${host}`, clock),
      signer: new ConfigSigner(signerIdentity.keyPem, [signerIdentity.certPem, ...signerIdentity.chainPems]),
      settings: {
        tokenTtlSeconds: config.bootstrap.tokenTtlSeconds,
        mqttUrl: () => mqttUrl,
        defaultNetwork: config.provisioning.defaultNetwork,
        securityPolicy: config.provisioning.securityPolicy,
        maxPayloadBytes: config.mqtt.maxPayloadBytes,
        claimMaxFailedAttempts: config.claims.maxFailedAttempts,
        claimLockoutSeconds: config.claims.lockoutSeconds,
      },
    });
    const apiKeys = new ApiKeys(store, clock);
    const initialAdminKeyFile = await apiKeys.ensureAdmin(dataDir, config.adminApiKey);
    if (initialAdminKeyFile) log.warn({ file: initialAdminKeyFile }, 'generated the initial admin API key; read it from this file (mode 0600)');

    // broker
    const broker = new ProvisioningBroker(
      service,
      {
        host: config.mqtt.host,
        port: config.mqtt.port,
        connectTimeoutMs: config.mqtt.connectTimeoutMs,
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
    const hostForUrl = isIP(host) === 6 ? `[${host}]` : host;
    mqttUrl = `mqtts://${hostForUrl}:${config.mqtt.publicPort ?? broker.port}`;

    // HTTP API
    const api = buildApi({
      service,
      apiKeys,
      ca,
      logger: log.child({ component: 'api' }),
      bodyLimitBytes: config.http.bodyLimitBytes,
      health: () => ({ mqttClients: broker.connectedClients }),
    });
    await api.listen({ host: config.http.host, port: config.http.port });
    stack.push(() => api.close());
    const address = api.server.address();
    const httpPort = typeof address === 'object' && address ? address.port : config.http.port;
    const httpHost = config.http.host === '0.0.0.0' || config.http.host === '::' ? '127.0.0.1' : config.http.host;

    log.info({ http: httpPort, mqtt: broker.port, dataDir }, 'provisiond started');
    return {
      config,
      store,
      ca,
      service,
      apiKeys,
      broker,
      api,
      httpUrl: `http://${isIP(httpHost) === 6 ? `[${httpHost}]` : httpHost}:${httpPort}`,
      httpPort,
      mqttPort: broker.port,
      initialAdminKeyFile,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
