import type { Clock } from '../../src/clock.js';

/** A clock the test moves by hand. Starts at real time so TLS validity checks still pass. */
export class ManualClock implements Clock {
  #t: number;
  constructor(start: Date = new Date()) {
    this.#t = start.getTime();
  }
  now(): Date {
    return new Date(this.#t);
  }
  advance(ms: number): void {
    this.#t += ms;
  }
  set(to: Date): void {
    this.#t = to.getTime();
  }
}
