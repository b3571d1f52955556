/**
 * HTTP request-rate limits, per client and per tenant (docs/operations.md "Limits"): token buckets
 * from src/policy/rate-limiter.ts, on Redis when several instances share the store.
 *
 * The client is the API key once it is verified, else the source address: a key id read from a
 * header nobody checked would let anyone drain another key's bucket. So, in Fastify's order:
 * - onRequest (before the route checks the key): a request without Authorization takes a token
 *   from its address's bucket. One with Authorization goes on to the key check, unless its address
 *   was refused for presenting wrong keys a moment ago: then it is refused without the check.
 * - preParsing (after the key check, before the body is read): a verified key takes a token from
 *   its own bucket and from its tenant's, both or neither; a request with Authorization on a route
 *   that checks no key (the CA files) takes one from its address's bucket.
 * - onError: a wrong key (AUTH_INVALID) costs its address a token.
 * Refusals are 429 RATE_LIMITED with Retry-After, counted as provisiond_rate_limited_total{scope}.
 * Health endpoints are exempt. While Redis is unreachable the limits let requests through (the
 * store answers 503 on its own); that is logged, at most every 10 s.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Clock } from '../clock.js';
import { ProvisiondError } from '../errors.js';
import type { Metrics, RateLimitScope } from '../metrics/index.js';
import { addressKey, isActive, type RateLimit, type RateLimiter, type RateRequest, type RateVerdict } from '../policy/index.js';
import { API_ERROR_CODES } from './errors.js';

export interface HttpRateLimits {
  limiter: RateLimiter;
  /** Per API key, or per source address for requests without a valid key. */
  client: RateLimit;
  /** All keys of one tenant together. */
  tenant: RateLimit;
  metrics: Metrics;
  clock: Clock;
}

/** Never limited: orchestrators poll them, and a 429 there would restart a healthy instance. */
export const RATE_LIMIT_EXEMPT = new Set(['/healthz', '/readyz', '/livez']);

/** Addresses refused for wrong keys that this instance remembers at most (the oldest goes first). */
const ADDRESSES_REMEMBERED = 10_000;
const LOG_EVERY_MS = 10_000;

function rateLimited(scope: RateLimitScope, whom: string, retryAfterSeconds: number): ProvisiondError {
  return new ProvisiondError(
    'RATE_LIMITED',
    { status: API_ERROR_CODES.RATE_LIMITED, description: 'Too many requests; retry after Retry-After seconds.' },
    `too many requests ${scope === 'tenant' ? 'for' : 'from'} ${whom}; retry in ${retryAfterSeconds} s`,
    { details: { retryAfterSeconds, scope } },
  );
}

export function installRateLimits(app: FastifyInstance, opts: HttpRateLimits): void {
  const { limiter, client, tenant, metrics, clock } = opts;
  if (!isActive(client) && !isActive(tenant)) return;
  /** Address -> until (ms): refused for wrong keys; keyed requests from it are refused before the key check. */
  const refusedAddresses = new Map<string, number>();
  let lastLogged = 0;

  const take = async (request: FastifyRequest, requests: readonly RateRequest[]): Promise<RateVerdict> => {
    try {
      return await limiter.take(requests);
    } catch (err) {
      const now = clock.now().getTime();
      if (now - lastLogged >= LOG_EVERY_MS) {
        lastLogged = now;
        request.log.warn({ err }, 'the rate limiter is unavailable; requests are let through unlimited');
      }
      return { allowed: true, retryAfterSeconds: 0 };
    }
  };
  const refuse = (scope: RateLimitScope, whom: string, retryAfterSeconds: number): never => {
    metrics.rateLimited.inc({ scope });
    throw rateLimited(scope, whom, retryAfterSeconds);
  };
  const byAddress = async (request: FastifyRequest): Promise<RateVerdict> => {
    const verdict = await take(request, [{ key: `client:ip:${addressKey(request.ip)}`, limit: client }]);
    if (!verdict.allowed) refuse('client', `address ${request.ip}`, verdict.retryAfterSeconds);
    return verdict;
  };
  const exempt = (request: FastifyRequest) => RATE_LIMIT_EXEMPT.has(request.routeOptions.url ?? '');

  app.addHook('onRequest', async (request) => {
    if (exempt(request)) return;
    if (request.headers.authorization === undefined) {
      await byAddress(request);
      return;
    }
    const address = addressKey(request.ip);
    const until = refusedAddresses.get(address);
    if (until === undefined) return;
    const left = until - clock.now().getTime();
    if (left > 0) refuse('client', `address ${request.ip}`, Math.ceil(left / 1000));
    refusedAddresses.delete(address);
  });

  app.addHook('preParsing', async (request) => {
    if (exempt(request)) return;
    const ctx = request.tenant;
    if (!ctx) {
      // a route that checks no key, called with an Authorization header
      if (request.headers.authorization !== undefined) await byAddress(request);
      return;
    }
    const verdict = await take(request, [
      { key: `client:${ctx.actor}`, limit: client },
      { key: `tenant:${ctx.tenantId}`, limit: tenant },
    ]);
    if (verdict.allowed) return;
    if (verdict.refused === 1) refuse('tenant', `tenant ${ctx.tenantId}`, verdict.retryAfterSeconds);
    refuse('client', `API key ${ctx.actor.replace(/^apikey:/, '')}`, verdict.retryAfterSeconds);
  });

  app.addHook('onError', async (request, _reply, error) => {
    if ((error as { code?: string }).code !== 'AUTH_INVALID' || exempt(request)) return;
    const address = addressKey(request.ip);
    const verdict = await take(request, [{ key: `client:ip:${address}`, limit: client }]);
    if (verdict.allowed) return;
    if (refusedAddresses.size >= ADDRESSES_REMEMBERED) refusedAddresses.delete(refusedAddresses.keys().next().value!);
    refusedAddresses.set(address, clock.now().getTime() + verdict.retryAfterSeconds * 1000);
  });
}
