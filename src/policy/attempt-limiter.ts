/**
 * Counts failed attempts per key (a client address, a device) in a fixed window and says when a
 * key is locked out. In-process; the clock is injected so tests pin time.
 */
import type { Clock } from '../clock.js';

export interface LimitVerdict {
  limited: boolean;
  retryAfterSeconds: number;
}

export class AttemptLimiter {
  readonly #failures = new Map<string, { count: number; windowStart: number }>();

  constructor(
    private readonly clock: Clock,
    private readonly maxFailures: number,
    private readonly windowSeconds: number,
  ) {}

  check(key: string): LimitVerdict {
    const entry = this.#current(key);
    if (!entry || entry.count < this.maxFailures) return { limited: false, retryAfterSeconds: 0 };
    const elapsed = (this.clock.now().getTime() - entry.windowStart) / 1000;
    return { limited: true, retryAfterSeconds: Math.max(1, Math.ceil(this.windowSeconds - elapsed)) };
  }

  fail(key: string): void {
    const entry = this.#current(key);
    if (entry) entry.count += 1;
    else this.#failures.set(key, { count: 1, windowStart: this.clock.now().getTime() });
    if (this.#failures.size > 100_000) this.#sweep();
  }

  reset(key: string): void {
    this.#failures.delete(key);
  }

  #current(key: string) {
    const entry = this.#failures.get(key);
    if (!entry) return undefined;
    if (this.clock.now().getTime() - entry.windowStart >= this.windowSeconds * 1000) {
      this.#failures.delete(key);
      return undefined;
    }
    return entry;
  }

  #sweep(): void {
    for (const key of [...this.#failures.keys()]) this.#current(key);
  }
}
