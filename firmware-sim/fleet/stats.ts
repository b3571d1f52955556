/**
 * What a fleet run measures: an HDR histogram per stage (microseconds, 3 significant digits) and
 * per-second buckets of what happened (throughput, failures, latency of the devices that finished
 * in that second, connections held).
 */
import * as hdr from 'hdr-histogram-js';
import { percentile } from './http.js';

/** The stages of one device's provisioning, and the chaos stages. */
export const STAGES = ['claim', 'csrToCert', 'configToAck', 'total', 'reprovision', 'reconnect'] as const;
export type Stage = (typeof STAGES)[number];
/** The four stages every provisioned device has; the others appear only with chaos. */
export const MAIN_STAGES: readonly Stage[] = ['claim', 'csrToCert', 'configToAck', 'total'];

export const STAGE_LABELS: Record<Stage, string> = {
  claim: 'claim (HTTP POST /v1/claims)',
  csrToCert: 'CSR → certificate',
  configToAck: 'config → ack → provisioned',
  total: 'total (claim → provisioned)',
  reprovision: 're-provision after factory reset',
  reconnect: 'reconnect after a dropped connection',
};

/** The percentiles the report gives for each stage. */
export const REPORT_PERCENTILES = [50, 90, 99, 99.9] as const;

export interface StageSummary {
  count: number;
  minMs: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  'p99.9Ms': number;
  maxMs: number;
}

const HIGHEST_US = 3_600_000_000; // one hour

export function newHistogram(): hdr.Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: HIGHEST_US,
    numberOfSignificantValueDigits: 3,
    bitBucketSize: 32,
    autoResize: true,
    useWebAssembly: false,
  });
}

/** ms with at most 3 decimals (the histogram holds microseconds). */
const ms = (us: number) => Math.round(us) / 1000;

export function summarize(h: hdr.Histogram): StageSummary {
  if (h.totalCount === 0) return { count: 0, minMs: 0, meanMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, 'p99.9Ms': 0, maxMs: 0 };
  return {
    count: h.totalCount,
    minMs: ms(h.minNonZeroValue),
    meanMs: ms(h.mean),
    p50Ms: at(h, 50),
    p90Ms: at(h, 90),
    p99Ms: at(h, 99),
    'p99.9Ms': at(h, 99.9),
    maxMs: ms(h.maxValue),
  };
}

/**
 * Value at a percentile, in ms. HDR answers with the highest value equivalent to the bucket's (within
 * 3 significant digits), which can lie just above the largest value recorded: capped at that.
 */
function at(h: hdr.Histogram, p: number): number {
  return ms(Math.min(h.getValueAtPercentile(p), h.maxValue));
}

/**
 * The HDR percentile curve: [percentile, ms] points spaced evenly on the usual log axis of
 * 1 / (1 - p) (0%, 90%, 99%, 99.9%, ...) as far as the sample count resolves, then the maximum.
 */
export function percentileCurve(h: hdr.Histogram, step = 0.05): Array<[number, number]> {
  if (h.totalCount === 0) return [];
  const xMax = Math.log10(Math.max(2, h.totalCount));
  const points: Array<[number, number]> = [];
  for (let x = 0; x < xMax; x += step) {
    const p = 100 * (1 - 10 ** -x);
    points.push([round6(p), at(h, p)]);
  }
  points.push([100, ms(h.maxValue)]);
  return points;
}

const round6 = (p: number) => Math.round(p * 1e6) / 1e6;

/** One HDR histogram per stage. */
export class StageHistograms {
  readonly #h = new Map<Stage, hdr.Histogram>();

  record(stage: Stage, valueMs: number): void {
    let h = this.#h.get(stage);
    if (!h) {
      h = newHistogram();
      this.#h.set(stage, h);
    }
    h.recordValue(Math.max(1, Math.round(valueMs * 1000)));
  }

  count(stage: Stage): number {
    return this.#h.get(stage)?.totalCount ?? 0;
  }

  get(stage: Stage): hdr.Histogram | undefined {
    return this.#h.get(stage);
  }

  /** Stages with at least one value, in STAGES order. */
  stages(): Stage[] {
    return STAGES.filter((s) => this.count(s) > 0);
  }

  /** Compressed HdrHistogram encoding (base64), readable by any HdrHistogram implementation. */
  encoded(stage: Stage): string | undefined {
    const h = this.#h.get(stage);
    return h ? hdr.encodeIntoCompressedBase64(h) : undefined;
  }

  destroy(): void {
    for (const h of this.#h.values()) h.destroy();
    this.#h.clear();
  }
}

/** What happened in one second of the run. */
export interface SecondBucket {
  /** Seconds since the start of the run. */
  t: number;
  started: number;
  provisioned: number;
  failed: number;
  neverAck: number;
  /** Hub children provisioned in this second (also counted in `provisioned`). */
  children: number;
  reprovisioned: number;
  drops: number;
  reconnects: number;
  /** Gauges sampled at the end of the second. */
  inFlight: number;
  held: number;
  telemetryMessages: number;
  telemetryBytes: number;
  /** p50/p99 (ms) per stage of the devices that finished that stage in this second. */
  latency: Partial<Record<Stage, { n: number; p50: number; p99: number }>>;
}

type Counter = 'started' | 'provisioned' | 'failed' | 'neverAck' | 'children' | 'reprovisioned' | 'drops' | 'reconnects';

export interface Gauges {
  inFlight: number;
  held: number;
  /** Running totals since the start. */
  telemetryMessages: number;
  telemetryBytes: number;
}

interface RawBucket {
  counts: Record<Counter, number>;
  gauges?: Gauges;
  latency: Map<Stage, number[]>;
}

/** Per-second buckets, keyed by seconds since `t0` (performance.now() time base). */
export class TimeSeries {
  readonly #buckets: RawBucket[] = [];

  constructor(readonly t0: number) {}

  #at(now: number): RawBucket {
    const i = Math.max(0, Math.floor((now - this.t0) / 1000));
    while (this.#buckets.length <= i) {
      this.#buckets.push({
        counts: { started: 0, provisioned: 0, failed: 0, neverAck: 0, children: 0, reprovisioned: 0, drops: 0, reconnects: 0 },
        latency: new Map(),
      });
    }
    return this.#buckets[i]!;
  }

  count(counter: Counter, now = performance.now()): void {
    this.#at(now).counts[counter]++;
  }

  latency(stage: Stage, valueMs: number, now = performance.now()): void {
    const b = this.#at(now);
    let list = b.latency.get(stage);
    if (!list) b.latency.set(stage, (list = []));
    list.push(valueMs);
  }

  /** Gauges at `now` (the last sample in a second wins); telemetry totals become per-second deltas in buckets(). */
  sample(g: Gauges, now = performance.now()): void {
    this.#at(now).gauges = { ...g };
  }

  buckets(): SecondBucket[] {
    let last: Gauges = { inFlight: 0, held: 0, telemetryMessages: 0, telemetryBytes: 0 };
    return this.#buckets.map((b, t) => {
      const g = b.gauges ?? last; // a second without a sample keeps the previous gauges
      const out: SecondBucket = {
        t,
        ...b.counts,
        inFlight: g.inFlight,
        held: g.held,
        telemetryMessages: Math.max(0, g.telemetryMessages - last.telemetryMessages),
        telemetryBytes: Math.max(0, g.telemetryBytes - last.telemetryBytes),
        latency: {},
      };
      last = g;
      for (const [stage, values] of b.latency) {
        const sorted = [...values].sort((x, y) => x - y);
        out.latency[stage] = { n: sorted.length, p50: round1(percentile(sorted, 50)), p99: round1(percentile(sorted, 99)) };
      }
      return out;
    });
  }
}

const round1 = (v: number) => Math.round(v * 10) / 10;
