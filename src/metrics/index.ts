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
import { Counter, Registry } from 'prom-client';
import type { AttemptLimiter } from '../policy/index.js';

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

export class Metrics {
  readonly registry = new Registry();

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
