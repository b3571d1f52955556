/**
 * Pure planning of a fleet run: which model each device is, which devices get which chaos, which
 * source address each uses. Deterministic for a seed, so a run can be repeated.
 */
import type { ModelName } from '../models.js';

export const MODEL_NAMES: readonly ModelName[] = ['thermostat', 'camera', 'hub'];

export type Mix = Partial<Record<ModelName, number>>;

/** "thermostat:6,camera:3,hub:1" -> { thermostat: 6, camera: 3, hub: 1 }. Weights are >= 0, not all 0. */
export function parseMix(text: string): Mix {
  const mix: Mix = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z]+)(?::(\d+(?:\.\d+)?))?$/.exec(part);
    if (!m) throw new Error(`--mix: "${part}" is not model:weight (e.g. thermostat:6,camera:3,hub:1)`);
    const name = m[1] as ModelName;
    if (!MODEL_NAMES.includes(name)) throw new Error(`--mix: unknown model "${m[1]}" (known: ${MODEL_NAMES.join(', ')})`);
    if (name in mix) throw new Error(`--mix: ${name} is given twice`);
    mix[name] = m[2] === undefined ? 1 : Number(m[2]);
  }
  if (Object.values(mix).reduce((a, b) => a + b, 0) <= 0) throw new Error('--mix: at least one weight must be above 0');
  return mix;
}

export function formatMix(mix: Mix): string {
  return MODEL_NAMES.filter((n) => (mix[n] ?? 0) > 0)
    .map((n) => `${n}:${mix[n]}`)
    .join(',');
}

/**
 * Exactly how many devices of each model (largest remainder: the counts add up to n and follow the
 * weights as closely as integers can), spread evenly over the run (smooth weighted round robin),
 * so that e.g. hubs do not all come at the end.
 */
export function assignModels(n: number, mix: Mix): ModelName[] {
  const names = MODEL_NAMES.filter((m) => (mix[m] ?? 0) > 0);
  const sum = names.reduce((a, m) => a + mix[m]!, 0);
  const exact = names.map((m) => (n * mix[m]!) / sum);
  const counts = exact.map(Math.floor);
  let left = n - counts.reduce((a, b) => a + b, 0);
  const byRemainder = names.map((_, i) => i).sort((a, b) => exact[b]! - counts[b]! - (exact[a]! - counts[a]!) || a - b);
  for (const i of byRemainder) {
    if (left <= 0) break;
    counts[i]!++;
    left--;
  }
  // smooth weighted round robin over the integer counts
  const current = names.map(() => 0);
  const remaining = [...counts];
  const out: ModelName[] = [];
  for (let k = 0; k < n; k++) {
    let best = -1;
    for (let i = 0; i < names.length; i++) {
      if (remaining[i]! <= 0) continue;
      current[i]! += counts[i]!;
      if (best < 0 || current[i]! > current[best]!) best = i;
    }
    current[best]! -= n;
    remaining[best]!--;
    out.push(names[best]!);
  }
  return out;
}

/** mulberry32: a small seeded PRNG, [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** How many of `n` a fraction means: rounded, but at least 1 when the fraction is above 0 and n > 0. */
export function countOf(fraction: number, n: number): number {
  if (!(fraction > 0) || n <= 0) return 0;
  return Math.min(n, Math.max(1, Math.round(fraction * n)));
}

/** `count` distinct members of `pool`, chosen with `random` (partial Fisher-Yates). */
export function choose<T>(pool: readonly T[], count: number, random: () => number): T[] {
  const a = [...pool];
  const k = Math.min(count, a.length);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(random() * (a.length - i));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, k);
}

/** "4" -> 127.0.0.1 .. 127.0.0.4; "10.0.0.5,10.0.0.6" -> those addresses. */
export function parseSourceAddresses(text: string): string[] {
  const t = text.trim();
  if (/^\d+$/.test(t)) {
    const n = Number(t);
    if (n < 1 || n > 254) throw new Error('--source-addresses: a count must be 1-254 (127.0.0.1 .. 127.0.0.N)');
    return loopbackAddresses(n);
  }
  const list = t.split(',').map((a) => a.trim()).filter(Boolean);
  if (list.length === 0) throw new Error('--source-addresses: give a count or a comma-separated list of addresses');
  for (const a of list) if (!/^(\d{1,3}\.){3}\d{1,3}$/.test(a) && !a.includes(':')) throw new Error(`--source-addresses: "${a}" is not an IP address`);
  return list;
}

export function loopbackAddresses(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `127.0.0.${i + 1}`);
}

export type ChaosRole = 'never-ack' | 'factory-reset' | 'drop';

export interface FleetPlan {
  models: ModelName[];
  neverAck: Set<number>;
  factoryReset: Set<number>;
  drop: Set<number>;
}

/**
 * Who does what. Chaos goes to devices that are not hubs (a hub's children depend on it), and a
 * device gets at most one role: never-ack first, then factory reset, then drops (drops need a held
 * device, so they are planned only when the run holds).
 */
export function planFleet(opts: {
  devices: number;
  models: ModelName[];
  neverAckFraction?: number;
  factoryResetFraction?: number;
  dropFraction?: number;
  holding: boolean;
  seed: number;
}): FleetPlan {
  const random = rng(opts.seed);
  const eligible = opts.models.map((m, i) => (m === 'hub' ? -1 : i)).filter((i) => i >= 0);
  const neverAck = new Set(choose(eligible, countOf(opts.neverAckFraction ?? 0, eligible.length), random));
  const rest = eligible.filter((i) => !neverAck.has(i));
  const factoryReset = new Set(choose(rest, countOf(opts.factoryResetFraction ?? 0, eligible.length), random));
  const rest2 = rest.filter((i) => !factoryReset.has(i));
  const drop = new Set(opts.holding ? choose(rest2, countOf(opts.dropFraction ?? 0, eligible.length), random) : []);
  return { models: opts.models, neverAck, factoryReset, drop };
}
