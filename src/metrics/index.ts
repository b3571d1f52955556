/**
 * The service's metrics (Prometheus text format, prom-client). One Registry per running service,
 * never prom-client's global default registry: tests start many services in one process, and each
 * must count only its own. The composition root builds one Metrics and hands it to the parts that
 * count; GET /metrics (src/api/routes/metrics.ts) renders it.
 *
 * Adding a metric: one field below (name, help, label names), then `metrics.<field>.inc(...)` where
 * it happens, and a row in docs/operations.md ("Metrics"). Label values that are known in advance
 * are created at 0 (`zero`), so a rate() or an alert on them works before the first event.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AttemptLimiter } from '../policy/index.js';
import type { DeviceState } from '../../schemas/types.js';
import type { DeviceRecord, DeviceUpdateExtras, IssuanceCommit, Store } from '../store/index.js';

/** Which HTTP request-rate limit refused a request. */
export type RateLimitScope = 'client' | 'tenant';

/** Which MQTT limit refused a connection, packet, message or subscription (docs/protocol.md §20). */
export const MQTT_LIMITS = [
  'connection_rate_address',
  'connection_rate_total',
  'packet_size',
  'payload_size',
  'topic_depth',
  'inflight_inbound',
  'inflight_outbound',
  'subscriptions',
] as const;
export type MqttLimit = (typeof MQTT_LIMITS)[number];

/** The terminal outcomes of provisioning counted by provisiond_device_outcomes_total (from the device events). */
export const DEVICE_OUTCOMES = ['provisioned', 'failed', 'stalled', 'released', 'revoked', 'decommissioned'] as const;
export type DeviceOutcome = (typeof DEVICE_OUTCOMES)[number];

/** The stages timed by provisiond_provisioning_stage_seconds (from the device's timestamps). */
export const PROVISIONING_STAGES = ['claim_to_identity', 'identity_to_provisioned', 'claim_to_provisioned'] as const;
export type ProvisioningStage = (typeof PROVISIONING_STAGES)[number];

/** MQTT session kinds (src/provisioning: DeviceSession.kind). */
export const MQTT_SESSION_KINDS = ['bootstrap', 'operational', 'renewal', 'birth'] as const;

/** How long the device counts by state are reused between scrapes (the store counts, never per scrape). */
export const DEVICE_STATE_CACHE_MS = 5000;

export class Metrics {
  readonly registry = new Registry();

  /** Devices by state, from the store's counts (refreshed at scrape time at most every DEVICE_STATE_CACHE_MS). */
  readonly devicesByState = new Gauge<'state'>({
    name: 'provisiond_devices',
    help: 'Devices by lifecycle state (all tenants), from the store, refreshed at most every 5 s.',
    labelNames: ['state'],
    registers: [this.registry],
    collect: () => this.#collectDeviceStates(),
  });

  /** Devices that reached a terminal outcome, by outcome (device events this instance emitted). */
  readonly deviceOutcomes = this.#counter('provisiond_device_outcomes_total', 'Devices that reached a terminal provisioning outcome on this instance, by outcome.', ['outcome'], {
    outcome: DEVICE_OUTCOMES,
  });

  /** Time between provisioning milestones of a device. */
  readonly stageSeconds = new Histogram<'stage'>({
    name: 'provisiond_provisioning_stage_seconds',
    help: 'Seconds between provisioning milestones of a device: claim to identity issued, identity to provisioned, claim to provisioned.',
    labelNames: ['stage'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400],
    registers: [this.registry],
  });

  /** Device certificates issued (first identity), renewed and revoked, committed to the store. */
  readonly certificates = this.#counter('provisiond_certificates_total', 'Device certificates committed by this instance, by operation (issued, renewed, revoked).', ['operation'], {
    operation: ['issued', 'renewed', 'revoked'],
  });

  /** MQTT connections open now on this instance, by session kind. */
  readonly mqttConnections = new Gauge<'kind'>({
    name: 'provisiond_mqtt_connections',
    help: 'MQTT connections open on this instance, by session kind (bootstrap, operational, renewal, birth).',
    labelNames: ['kind'],
    registers: [this.registry],
  });

  /** MQTT connections accepted, by session kind. */
  readonly mqttConnects = this.#counter('provisiond_mqtt_connects_total', 'MQTT connections accepted (authenticated), by session kind.', ['kind'], { kind: MQTT_SESSION_KINDS });

  /** HTTP error answers, by code (schemas/error.json). */
  readonly httpErrors = this.#counter('provisiond_http_errors_total', 'HTTP error answers (4xx, 5xx), by error code.', ['code']);

  /** MQTT refusals (CONNECT refused, publish or subscription refused, error replies), by code. */
  readonly mqttRefusals = this.#counter('provisiond_mqtt_refusals_total', 'MQTT refusals by error code: connections refused, publications or subscriptions refused, error replies sent to devices.', ['code']);

  /** Store call latency by operation (every call, answered or failed). */
  readonly storeSeconds = new Histogram<'operation'>({
    name: 'provisiond_store_operation_seconds',
    help: 'Seconds a store call took, by Store operation (answered or failed).',
    labelNames: ['operation'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [this.registry],
  });

  #deviceStates: (() => Promise<Partial<Record<DeviceState, number>>>) | undefined;
  #deviceStatesAt = 0;
  #deviceStatesNow: Promise<void> | undefined;
  readonly #statesSeen = new Set<string>();

  /** Where provisiond_devices comes from (the store's countDevicesByState); `now` for the cache. */
  countDevicesWith(source: () => Promise<Partial<Record<DeviceState, number>>>, now: () => number = Date.now): void {
    this.#deviceStates = source;
    this.#now = now;
  }

  #now: () => number = Date.now;

  async #collectDeviceStates(): Promise<void> {
    const source = this.#deviceStates;
    if (!source || (this.#deviceStatesAt !== 0 && this.#now() - this.#deviceStatesAt < DEVICE_STATE_CACHE_MS)) return;
    // one count at a time, however many scrapes arrive together
    this.#deviceStatesNow ??= source()
      .then((counts) => {
        // a state whose last device left reads 0 (not a stale count)
        for (const state of this.#statesSeen) if (!(state in counts)) this.devicesByState.set({ state }, 0);
        for (const [state, n] of Object.entries(counts)) {
          this.#statesSeen.add(state);
          this.devicesByState.set({ state }, n ?? 0);
        }
        this.#deviceStatesAt = this.#now();
      })
      .catch(() => undefined) // the store is away: the last counts stay (readyz tells)
      .finally(() => (this.#deviceStatesNow = undefined));
    await this.#deviceStatesNow;
  }

  /** HTTP requests answered 429 RATE_LIMITED, by the limit (an API key or source address, or a tenant). */
  readonly rateLimited = this.#counter('provisiond_rate_limited_total', 'HTTP requests refused with 429 RATE_LIMITED, by the limit that refused them.', ['scope'], {
    scope: ['client', 'tenant'],
  });

  /** MQTT connections, packets, messages or subscriptions refused by a broker limit. */
  readonly mqttRejections = this.#counter('provisiond_mqtt_rejections_total', 'MQTT connections, packets, messages or subscriptions refused by a broker limit, by limit.', ['limit'], {
    limit: MQTT_LIMITS,
  });

  /** Claims refused with CLAIM_RATE_LIMITED (a client or device locked out after wrong claim codes). */
  readonly claimsRateLimited = this.#counter('provisiond_claims_rate_limited_total', 'Claims refused with CLAIM_RATE_LIMITED (client or device locked out after wrong claim codes).');

  /** Bootstrap credentials that expired unused and were removed by the sweep. */
  readonly bootstrapTokensExpired = this.#counter('provisiond_bootstrap_tokens_expired_total', 'Bootstrap credentials that expired unused and were removed by the periodic sweep.');

  /** The Prometheus text exposition of every metric. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  #counter<L extends string = never>(name: string, help: string, labelNames: readonly L[] = [], zero: { [K in L]?: readonly string[] } = {}): Counter<L> {
    const counter = new Counter<L>({ name, help, labelNames, registers: [this.registry] });
    const [label] = labelNames;
    if (labelNames.length === 0) counter.inc(0);
    else if (label !== undefined && labelNames.length === 1) {
      for (const value of zero[label] ?? []) counter.inc({ [label]: value } as Partial<Record<L, string>>, 0);
    }
    return counter;
  }
}

/** The claim throttle, counting every claim it refuses (provisiond_claims_rate_limited_total). */
export function countRefusedClaims(limiter: AttemptLimiter, metrics: Metrics): AttemptLimiter {
  return {
    check: async (key) => {
      const verdict = await limiter.check(key);
      if (verdict.limited) metrics.claimsRateLimited.inc();
      return verdict;
    },
    fail: (key) => limiter.fail(key),
    reset: (key) => limiter.reset(key),
  };
}

/**
 * The store, timed: every call observed in provisiond_store_operation_seconds by operation, and
 * the certificates it commits counted in provisiond_certificates_total (issued or renewed by
 * commitIssuance, revoked by updateDevice), only once the commit succeeded.
 */
export function timeStore(store: Store, metrics: Metrics): Store {
  const observe = (operation: string, args: unknown[]): void => {
    if (operation === 'commitIssuance') {
      const commit = args[0] as IssuanceCommit;
      const renewal = commit.audit?.some((a) => a.action === 'certificate.renew') ?? false;
      metrics.certificates.inc({ operation: renewal ? 'renewed' : 'issued' });
    } else if (operation === 'updateDevice') {
      const revoked = (args[3] as DeviceUpdateExtras | undefined)?.certificates?.filter((c) => c.status === 'revoked').length ?? 0;
      if (revoked > 0) metrics.certificates.inc({ operation: 'revoked' }, revoked);
    }
  };
  return new Proxy(store, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function' || typeof property !== 'string' || property === 'constructor') return value;
      const histogram = metrics.storeSeconds.labels({ operation: property });
      return (...args: unknown[]) => {
        const end = histogram.startTimer();
        let result: unknown;
        try {
          result = (value as (...a: unknown[]) => unknown).apply(target, args);
        } catch (err) {
          end();
          throw err;
        }
        if (!(result instanceof Promise)) {
          end();
          return result;
        }
        return result.then(
          (answer: unknown) => {
            end();
            observe(property, args);
            return answer;
          },
          (err: unknown) => {
            end();
            throw err;
          },
        );
      };
    },
  });
}

/** What observeDeviceEvents needs from the event bus (src/alerts EventBus.subscribeAll). */
export interface DeviceEventSource {
  subscribeAll(listener: (event: { type: string; deviceId?: string }) => void): () => void;
}

/**
 * Counts the terminal outcomes (device.provisioned, device.failed, ...) this instance emits, and
 * times the provisioning stages from the device's milestones (claimedAt, identityIssuedAt,
 * provisionedAt) once a device gets its identity or is provisioned. Returns the unsubscribe.
 */
export function observeDeviceEvents(
  bus: DeviceEventSource,
  metrics: Metrics,
  getDevice: (id: string) => Promise<Pick<DeviceRecord, 'claimedAt' | 'identityIssuedAt' | 'provisionedAt'> | undefined>,
): () => void {
  const outcomes = new Set<string>(DEVICE_OUTCOMES);
  const seconds = (from?: string, to?: string) => (from && to ? (Date.parse(to) - Date.parse(from)) / 1000 : undefined);
  const observe = (stage: ProvisioningStage, value: number | undefined) => {
    if (value !== undefined && Number.isFinite(value) && value >= 0) metrics.stageSeconds.observe({ stage }, value);
  };
  return bus.subscribeAll((event) => {
    const type = event.type.startsWith('device.') ? event.type.slice('device.'.length) : undefined;
    if (type === undefined || event.deviceId === undefined) return;
    if (outcomes.has(type)) metrics.deviceOutcomes.inc({ outcome: type });
    if (type !== 'identity_issued' && type !== 'provisioned') return;
    getDevice(event.deviceId).then(
      (d) => {
        if (!d) return;
        if (type === 'identity_issued') observe('claim_to_identity', seconds(d.claimedAt, d.identityIssuedAt));
        else {
          observe('identity_to_provisioned', seconds(d.identityIssuedAt, d.provisionedAt));
          observe('claim_to_provisioned', seconds(d.claimedAt, d.provisionedAt));
        }
      },
      () => undefined, // the store is away: this sample is lost, nothing else
    );
  });
}
