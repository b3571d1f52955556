/**
 * The JSON report of a fleet run: summary, per-stage HDR percentiles (and the percentile curve),
 * errors by code and stage, and the per-second time series. Small: nothing in it is per device.
 */
import type { ModelName } from '../models.js';
import type { DeviceResult } from './runner.js';
import { STAGES, STAGE_LABELS, percentileCurve, summarize, type SecondBucket, type Stage, type StageHistograms, type StageSummary } from './stats.js';

export const REPORT_KIND = 'provisiond-fleet-report';

export interface RunOptionsEcho {
  devices: number;
  rate?: number;
  concurrency?: number;
  mix: string;
  childrenPerHub: number;
  holdSeconds: number;
  telemetry: boolean;
  neverAckFraction: number;
  factoryResetFraction: number;
  dropFraction: number;
  sourceAddresses: string[];
  /** Devices registered in bulk before the clock started (their times start at the claim). */
  preRegistered: number;
  timeoutMs: number;
  seed: number;
  runId: string;
}

/** Everything the runner hands over to make the report. */
export interface RunFacts {
  startedAt: Date;
  finishedAt: Date;
  apiUrl: string;
  options: RunOptionsEcho;
  planned: { hubs: number; children: number; neverAck: number; factoryResets: number; drops: number };
  results: readonly DeviceResult[];
  provisioningMs: number;
  holdMs: number;
  wallMs: number;
  counters: {
    drops: number;
    reconnects: number;
    reconnectFailures: number;
    unexpectedDisconnects: number;
    reprovisioned: number;
    peakInFlight: number;
    peakHeld: number;
    telemetryMessages: number;
    telemetryBytes: number;
  };
  histograms: StageHistograms;
  series: SecondBucket[];
  errors: Array<{ code: string; stage: string; count: number; example: string }>;
}

export interface StageReport extends StageSummary {
  label: string;
  /** [percentile, ms] points of the HDR percentile curve. */
  curve: Array<[number, number]>;
  /** The histogram itself, HdrHistogram compressed base64 (microseconds). */
  hdr: string;
}

export interface ModelCounts {
  devices: number;
  provisioned: number;
  neverAck: number;
  failed: number;
}

export interface LoadReport {
  kind: typeof REPORT_KIND;
  version: 1;
  startedAt: string;
  finishedAt: string;
  target: { apiUrl: string; local?: boolean };
  /** Filled in by the command line: where the run happened. */
  machine?: { hostname?: string; cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string };
  options: RunOptionsEcho;
  summary: {
    /** Devices provisioned directly, and hub children on top of them. */
    devices: number;
    children: number;
    total: number;
    provisioned: number;
    childrenProvisioned: number;
    neverAck: number;
    failed: number;
    hubs: number;
    factoryResets: number;
    reprovisioned: number;
    drops: number;
    reconnects: number;
    reconnectFailures: number;
    unexpectedDisconnects: number;
    peakInFlight: number;
    peakHeld: number;
    telemetryMessages: number;
    telemetryBytes: number;
    /** Start of the run to the last device finished provisioning. */
    provisioningMs: number;
    holdMs: number;
    wallMs: number;
    /** Devices and children provisioned per second of the provisioning phase. */
    provisionedPerSecond: number;
  };
  byModel: Partial<Record<ModelName, ModelCounts>>;
  stages: Partial<Record<Stage, StageReport>>;
  errors: Array<{ code: string; stage: string; count: number; example: string }>;
  timeSeries: SecondBucket[];
  /** What the service itself recorded, by state (with --local). */
  serviceStates?: Record<string, number>;
}

export function buildLoadReport(f: RunFacts): LoadReport {
  const top = f.results.filter((r) => !r.hubId);
  const children = f.results.filter((r) => r.hubId);
  const is = (r: DeviceResult, o: DeviceResult['outcome']) => r.outcome === o;
  const provisioned = f.results.filter((r) => is(r, 'provisioned')).length;
  const byModel: LoadReport['byModel'] = {};
  for (const r of f.results) {
    const m = (byModel[r.model] ??= { devices: 0, provisioned: 0, neverAck: 0, failed: 0 });
    m.devices++;
    if (is(r, 'provisioned')) m.provisioned++;
    else if (is(r, 'never-ack')) m.neverAck++;
    else m.failed++;
  }
  const stages: LoadReport['stages'] = {};
  for (const stage of STAGES) {
    const h = f.histograms.get(stage);
    if (!h || h.totalCount === 0) continue;
    stages[stage] = { label: STAGE_LABELS[stage], ...summarize(h), curve: percentileCurve(h), hdr: f.histograms.encoded(stage)! };
  }
  return {
    kind: REPORT_KIND,
    version: 1,
    startedAt: f.startedAt.toISOString(),
    finishedAt: f.finishedAt.toISOString(),
    target: { apiUrl: f.apiUrl },
    options: f.options,
    summary: {
      devices: top.length,
      children: children.length,
      total: f.results.length,
      provisioned,
      childrenProvisioned: children.filter((r) => is(r, 'provisioned')).length,
      neverAck: f.results.filter((r) => is(r, 'never-ack')).length,
      failed: f.results.filter((r) => is(r, 'failed') || r.outcome === undefined).length,
      hubs: f.planned.hubs,
      factoryResets: f.planned.factoryResets,
      reprovisioned: f.counters.reprovisioned,
      drops: f.counters.drops,
      reconnects: f.counters.reconnects,
      reconnectFailures: f.counters.reconnectFailures,
      unexpectedDisconnects: f.counters.unexpectedDisconnects,
      peakInFlight: f.counters.peakInFlight,
      peakHeld: f.counters.peakHeld,
      telemetryMessages: f.counters.telemetryMessages,
      telemetryBytes: f.counters.telemetryBytes,
      provisioningMs: Math.round(f.provisioningMs),
      holdMs: Math.round(f.holdMs),
      wallMs: Math.round(f.wallMs),
      provisionedPerSecond: Math.round((provisioned / Math.max(0.001, f.provisioningMs / 1000)) * 10) / 10,
    },
    byModel,
    stages,
    errors: f.errors,
    timeSeries: f.series,
  };
}

/** A few lines for a terminal. */
export function formatSummary(r: LoadReport): string {
  const s = r.summary;
  const lines = [
    'fleet run summary',
    `  devices            ${s.devices} (+ ${s.children} hub children)   mix ${r.options.mix}`,
    `  provisioned        ${s.provisioned}${s.children ? `   (children ${s.childrenProvisioned})` : ''}`,
    `  never acknowledged ${s.neverAck}   (by design: left in "configuring")`,
    `  failed             ${s.failed}${r.errors.length ? `   ${r.errors.map((e) => `${e.stage}/${e.code} x${e.count}`).join(', ')}` : ''}`,
    `  provisioning       ${(s.provisioningMs / 1000).toFixed(1)} s   ${s.provisionedPerSecond} devices/s   peak in flight ${s.peakInFlight}`,
  ];
  if (s.holdMs > 0) {
    lines.push(
      `  hold               ${(s.holdMs / 1000).toFixed(1)} s   peak held ${s.peakHeld}   telemetry ${s.telemetryMessages} messages (${(s.telemetryBytes / 2 ** 20).toFixed(1)} MiB)`,
      `  chaos              drops ${s.drops}, reconnects ${s.reconnects}, reconnect failures ${s.reconnectFailures}, unexpected disconnects ${s.unexpectedDisconnects}`,
    );
  }
  if (s.factoryResets) lines.push(`  factory resets     ${s.reprovisioned}/${s.factoryResets} re-provisioned`);
  lines.push('  latency (ms)       stage                                   n      p50      p90      p99    p99.9      max');
  const f = (v: number) => v.toFixed(1).padStart(8);
  for (const st of Object.values(r.stages) as StageReport[]) {
    lines.push(`                     ${st.label.padEnd(38)} ${String(st.count).padStart(5)} ${f(st.p50Ms)} ${f(st.p90Ms)} ${f(st.p99Ms)} ${f(st['p99.9Ms'])} ${f(st.maxMs)}`);
  }
  return lines.join('\n');
}

/**
 * The report as JSON text: the top two levels indented, everything deeper on one line (a time
 * series row, a stage's figures), so the file stays small and still reads and diffs well.
 */
export function reportToJson(r: LoadReport): string {
  const out = (v: unknown, depth: number): string => {
    if (depth >= 2 || v === null || typeof v !== 'object') return JSON.stringify(v);
    const pad = ' '.repeat(depth + 1);
    const end = ' '.repeat(depth);
    if (Array.isArray(v)) return v.length ? `[\n${v.map((x) => pad + out(x, depth + 1)).join(',\n')}\n${end}]` : '[]';
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    return entries.length ? `{\n${entries.map(([k, x]) => `${pad}${JSON.stringify(k)}: ${out(x, depth + 1)}`).join(',\n')}\n${end}}` : '{}';
  };
  return out(r, 0) + '\n';
}
