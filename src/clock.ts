/** Time is injected everywhere it matters (token expiry, certificate validity, deadlines). */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };
