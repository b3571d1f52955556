/**
 * Delivers service events to tenants' webhooks: POST of the event as JSON, signed with
 * HMAC-SHA256 when the tenant set a secret, retried with exponential backoff and jitter.
 * Deliveries to one URL go one at a time, in the order notify() was called. The queue lives in
 * memory: what is pending when the process stops is lost (at-most-once across restarts).
 *
 * Receivers verify `X-Provisiond-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>` over the
 * raw body bytes and deduplicate on `X-Provisiond-Delivery` (the event id, the same on every retry).
 */
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { ServiceEvent } from './bus.js';
import { AlertsError } from './errors.js';

export interface WebhookTarget {
  url: string;
  /** HMAC key; never logged. */
  secret?: string;
}

export interface WebhookNotifierOptions {
  clock: Clock;
  log: Logger;
  /** Attempts per delivery, the first included (default 6). */
  maxAttempts?: number;
  /** Delay before the second attempt (default 1000 ms); doubles each time, ±20 % jitter, capped at 5 min. */
  baseDelayMs?: number;
  /** Per-attempt timeout covering connect and response headers (default 5000 ms). */
  timeoutMs?: number;
  /** Waits between attempts; `signal` aborts when stop() is called. Injected by tests. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Uniform [0, 1) for the jitter (default Math.random). */
  random?: () => number;
  /** Deliveries waiting per URL beyond which new ones are dropped (default 1000). */
  maxQueuedPerTarget?: number;
}

/** Counters for metrics; `deliveries` returns a snapshot. */
export interface DeliveryStats {
  /** HTTP attempts made (a delivery retried twice counts 3). */
  attempted: number;
  /** Deliveries answered 2xx. */
  succeeded: number;
  /** Deliveries given up: a permanent 4xx, or every attempt failed. */
  failed: number;
  /** Deliveries never completed: queue full, or cancelled by stop(). */
  dropped: number;
  /** Deliveries queued or in progress now. */
  pending: number;
}

export const MAX_RETRY_DELAY_MS = 5 * 60_000;
const USER_AGENT = 'provisiond-webhook/1';

interface Delivery {
  readonly url: string;
  readonly host: string;
  readonly secret: string | undefined;
  readonly event: ServiceEvent;
}

interface Queue {
  readonly items: Delivery[];
  running: Promise<void> | undefined;
}

type Outcome =
  | { ok: true; status: number }
  | { ok: false; retryable: boolean; status?: number; error?: string; retryAfterMs?: number };

/** Checks a webhook URL the way delivery needs it (also usable when a tenant sets one). */
export function validateWebhookUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new AlertsError('WEBHOOK_URL_INVALID', 'the webhook URL is not an absolute URL');
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw new AlertsError('WEBHOOK_URL_INVALID', 'the webhook URL must use http or https');
  if (parsed.username || parsed.password) throw new AlertsError('WEBHOOK_URL_INVALID', 'the webhook URL must not carry credentials');
  return parsed;
}

/** `sha256=<hex>` of HMAC-SHA256(secret, body): what X-Provisiond-Signature carries. */
export function signWebhookBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body, 'utf8').digest('hex')}`;
}

export class WebhookNotifier {
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #maxAttempts: number;
  readonly #baseDelayMs: number;
  readonly #timeoutMs: number;
  readonly #sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly #random: () => number;
  readonly #maxQueued: number;
  readonly #queues = new Map<string, Queue>();
  readonly #stop = new AbortController();
  readonly #stats: DeliveryStats = { attempted: 0, succeeded: 0, failed: 0, dropped: 0, pending: 0 };

  constructor(opts: WebhookNotifierOptions) {
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#maxAttempts = opts.maxAttempts ?? 6;
    this.#baseDelayMs = opts.baseDelayMs ?? 1000;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    this.#sleep = opts.sleep ?? abortableSleep;
    this.#random = opts.random ?? Math.random;
    this.#maxQueued = opts.maxQueuedPerTarget ?? 1000;
    if (!Number.isInteger(this.#maxAttempts) || this.#maxAttempts < 1) throw new RangeError('maxAttempts must be a positive integer');
  }

  get deliveries(): Readonly<DeliveryStats> {
    return { ...this.#stats };
  }

  /**
   * Queues a delivery and returns at once. Throws AlertsError WEBHOOK_URL_INVALID for a URL that
   * can never be delivered to. After stop() the delivery is dropped.
   */
  notify(target: WebhookTarget, event: ServiceEvent): void {
    const url = validateWebhookUrl(target.url);
    const delivery: Delivery = { url: url.href, host: url.host, secret: target.secret || undefined, event };
    const fields = { host: delivery.host, eventId: event.id, type: event.type };
    if (this.#stop.signal.aborted) {
      this.#stats.dropped++;
      this.#log.warn(fields, 'webhook notifier stopped; delivery dropped');
      return;
    }
    let queue = this.#queues.get(delivery.url);
    if (!queue) this.#queues.set(delivery.url, (queue = { items: [], running: undefined }));
    if (queue.items.length >= this.#maxQueued) {
      this.#stats.dropped++;
      this.#log.warn({ ...fields, queued: queue.items.length }, 'webhook queue full; delivery dropped');
      return;
    }
    queue.items.push(delivery);
    this.#stats.pending++;
    queue.running ??= this.#run(delivery.url, queue);
  }

  /** Resolves when every queued delivery (including ones queued meanwhile) has finished. */
  async drain(): Promise<void> {
    while (this.#queues.size > 0) await Promise.all([...this.#queues.values()].map((q) => q.running));
  }

  /** Cancels pending retries, in-flight requests and queued deliveries; resolves when all have wound down. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.drain();
  }

  async #run(key: string, queue: Queue): Promise<void> {
    // Let notify() return before the first request starts.
    await Promise.resolve();
    for (let next = queue.items.shift(); next; next = queue.items.shift()) {
      await this.#deliver(next);
      this.#stats.pending--;
    }
    this.#queues.delete(key);
  }

  async #deliver(d: Delivery): Promise<void> {
    const body = JSON.stringify(d.event);
    const fields = { host: d.host, eventId: d.event.id, type: d.event.type };
    for (let attempt = 1; ; attempt++) {
      if (this.#stop.signal.aborted) return this.#dropped(fields);
      this.#stats.attempted++;
      const started = this.#clock.now().getTime();
      const outcome = await this.#attempt(d, body);
      const durationMs = this.#clock.now().getTime() - started;
      if (this.#stop.signal.aborted && !outcome.ok) return this.#dropped(fields);
      if (outcome.ok) {
        this.#stats.succeeded++;
        this.#log.info({ ...fields, attempt, status: outcome.status, durationMs }, 'webhook delivered');
        return;
      }
      const failure = { ...fields, attempt, durationMs, status: outcome.status, error: outcome.error };
      if (!outcome.retryable || attempt >= this.#maxAttempts) {
        this.#stats.failed++;
        this.#log.warn(failure, outcome.retryable ? `webhook delivery failed; giving up after ${attempt} attempts` : 'webhook delivery rejected; not retrying');
        return;
      }
      const delayMs = this.#delay(attempt, outcome.retryAfterMs);
      this.#log.warn({ ...failure, retryInMs: delayMs }, 'webhook delivery failed; will retry');
      await this.#pause(delayMs);
    }
  }

  #dropped(fields: Record<string, unknown>): void {
    this.#stats.dropped++;
    this.#log.info(fields, 'webhook delivery cancelled by stop');
  }

  async #attempt(d: Delivery, body: string): Promise<Outcome> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': USER_AGENT,
      'x-provisiond-event': d.event.type,
      'x-provisiond-delivery': d.event.id,
    };
    if (d.secret) headers['x-provisiond-signature'] = signWebhookBody(d.secret, body);
    try {
      const res = await fetch(d.url, {
        method: 'POST',
        headers,
        body,
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(this.#timeoutMs), this.#stop.signal]),
      });
      // The receiver's answer body is not used; release the connection.
      await res.body?.cancel().catch(() => undefined);
      if (res.status >= 200 && res.status < 300) return { ok: true, status: res.status };
      const permanent = res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429;
      const retryAfterMs = this.#retryAfterMs(res.headers.get('retry-after'));
      return { ok: false, retryable: !permanent, status: res.status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
    } catch (err) {
      return { ok: false, retryable: true, error: describeFetchError(err) };
    }
  }

  /** base·2^(attempt-1) ±20 %, at least what Retry-After asked for, at most 5 min. */
  #delay(attempt: number, retryAfterMs: number | undefined): number {
    const exponential = this.#baseDelayMs * 2 ** (attempt - 1);
    const jittered = exponential * (0.8 + 0.4 * this.#random());
    return Math.round(Math.min(MAX_RETRY_DELAY_MS, Math.max(jittered, retryAfterMs ?? 0)));
  }

  #retryAfterMs(value: string | null): number | undefined {
    if (!value) return undefined;
    if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
    const date = Date.parse(value);
    return Number.isNaN(date) ? undefined : Math.max(0, date - this.#clock.now().getTime());
  }

  async #pause(ms: number): Promise<void> {
    const signal = this.#stop.signal;
    if (signal.aborted) return;
    let onAbort: (() => void) | undefined;
    const stopped = new Promise<void>((resolve) => {
      onAbort = resolve;
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([this.#sleep(ms, signal), stopped]);
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
  }
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** A short reason for the log: never the URL (it may carry a token in its path or query). */
function describeFetchError(err: unknown): string {
  if (err instanceof Error) {
    if (err.name === 'TimeoutError') return 'timeout';
    if (err.name === 'AbortError') return 'aborted';
    const cause = (err as { cause?: unknown }).cause;
    const code = typeof cause === 'object' && cause !== null && 'code' in cause ? String((cause as { code: unknown }).code) : undefined;
    return code ?? err.name;
  }
  return 'unknown error';
}
