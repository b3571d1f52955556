/**
 * Counts failed attempts per key (a client address, a device) in a fixed window and says when a
 * key is locked out. Two implementations: in-process (one instance, the SQLite store) and Redis
 * (src/store/redis-attempt-limiter.ts; several instances count together, so N instances do not
 * give an attacker N times the guesses). Both take the time from the injected clock, so tests pin
 * it; both pass test/contract/attempt-limiter.contract.ts.
 */
import type { Clock } from '../clock.js';

export interface LimitVerdict {
  limited: boolean;
  retryAfterSeconds: number;
}

export interface AttemptLimiter {
  /** Whether `key` is locked out now, and for how long. */
  check(key: string): Promise<LimitVerdict>;
  /** Counts one failure; the window starts at the first failure. */
  fail(key: string): Promise<void>;
  /** Forgets the key's failures (after a success). */
  reset(key: string): Promise<void>;
}

export interface LimiterSettings {
  maxFailures: number;
  windowSeconds: number;
}

/** What a window of failures means at `nowMs`: shared by both implementations. */
export function verdict(settings: LimiterSettings, now: number, entry: { count: number; windowStart: number } | undefined): LimitVerdict {
  if (!entry || now - entry.windowStart >= settings.windowSeconds * 1000 || entry.count < settings.maxFailures) {
    return { limited: false, retryAfterSeconds: 0 };
  }
  const elapsed = (now - entry.windowStart) / 1000;
  return { limited: true, retryAfterSeconds: Math.max(1, Math.ceil(settings.windowSeconds - elapsed)) };
}

export class MemoryAttemptLimiter implements AttemptLimiter {
  readonly #failures = new Map<string, { count: number; windowStart: number }>();

  constructor(
    private readonly clock: Clock,
    private readonly settings: LimiterSettings,
  ) {}

  async check(key: string): Promise<LimitVerdict> {
    return verdict(this.settings, this.clock.now().getTime(), this.#current(key));
  }

  async fail(key: string): Promise<void> {
    const entry = this.#current(key);
    if (entry) entry.count += 1;
    else this.#failures.set(key, { count: 1, windowStart: this.clock.now().getTime() });
    if (this.#failures.size > 100_000) this.#sweep();
  }

  async reset(key: string): Promise<void> {
    this.#failures.delete(key);
  }

  #current(key: string) {
    const entry = this.#failures.get(key);
    if (!entry) return undefined;
    if (this.clock.now().getTime() - entry.windowStart >= this.settings.windowSeconds * 1000) {
      this.#failures.delete(key);
      return undefined;
    }
    return entry;
  }

  #sweep(): void {
    for (const key of [...this.#failures.keys()]) this.#current(key);
  }
}
