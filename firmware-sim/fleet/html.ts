/**
 * The HTML report of a fleet run: one self-contained file (inline CSS and SVG, no script, nothing
 * fetched), with throughput and connections over time, latency over time per stage (p50/p99), the
 * HDR latency distribution and the summary, stage, model and error tables.
 */
import type { LoadReport, StageReport } from './report.js';
import { MAIN_STAGES, STAGE_LABELS, type SecondBucket, type Stage } from './stats.js';
import { escapeXml as esc, formatNumber, lineChart, type Series, type Tick } from './svg.js';

export const STAGE_COLORS: Record<Stage, string> = {
  claim: '#1f77b4',
  csrToCert: '#ff7f0e',
  configToAck: '#2ca02c',
  total: '#6a3d9a',
  reprovision: '#8c564b',
  reconnect: '#17becf',
};

const ms = (v: number) => (v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1));
const seconds = (v: number) => `${v}s`;

function series(buckets: SecondBucket[], pick: (b: SecondBucket) => number | null): Array<[number, number | null]> {
  return buckets.map((b) => [b.t, pick(b)]);
}

const WIDE = 960;
const HALF = 476;

/** Charts over time share the x axis: seconds since the start of the run (to `end`, default its end). */
function timeAxis(report: LoadReport, end = report.timeSeries.length - 1) {
  return { label: 'seconds since start', min: 0, max: Math.max(1, end), format: seconds };
}

function holdMarker(report: LoadReport) {
  return report.summary.holdMs > 0 ? [{ x: report.summary.provisioningMs / 1000, label: 'hold' }] : [];
}

export function throughputChart(report: LoadReport): string {
  const b = report.timeSeries;
  return lineChart({
    title: 'Throughput over time (per second)',
    width: WIDE,
    x: timeAxis(report),
    y: { label: 'devices per second' },
    series: [
      { name: 'provisioned/s', color: '#2ca02c', points: series(b, (x) => x.provisioned), fill: true, width: 2 },
      { name: 'started/s', color: '#888', points: series(b, (x) => x.started), dash: '4 3' },
      { name: 'failures/s', color: '#d62728', points: series(b, (x) => x.failed), width: 2 },
    ],
    markers: holdMarker(report),
  });
}

/** The rare events, per second, as stacked bars: failures, never-ack, connections cut, reconnects, re-provisioned. */
export function eventsChart(report: LoadReport): string {
  const b = report.timeSeries;
  const list: Series[] = [
    { name: 'failures', color: '#d62728', points: series(b, (x) => x.failed), bar: true },
    { name: 'never acknowledged', color: '#ff7f0e', points: series(b, (x) => x.neverAck), bar: true },
    { name: 'connections cut', color: '#7f0000', points: series(b, (x) => x.drops), bar: true },
    { name: 'reconnected', color: '#17becf', points: series(b, (x) => x.reconnects), bar: true },
    { name: 're-provisioned after factory reset', color: '#8c564b', points: series(b, (x) => x.reprovisioned), bar: true },
  ];
  return lineChart({
    title: 'Failures and chaos events over time (per second, stacked)',
    width: WIDE,
    height: 200,
    x: timeAxis(report),
    y: { label: 'events' },
    series: list,
    markers: holdMarker(report),
  });
}

export function connectionsChart(report: LoadReport): string {
  const b = report.timeSeries;
  const list: Series[] = [
    { name: 'in flight (provisioning)', color: '#1f77b4', points: series(b, (x) => x.inFlight), width: 2 },
    { name: 'held connections', color: '#6a3d9a', points: series(b, (x) => x.held), width: 2, fill: true },
  ];
  const withTelemetry = report.summary.telemetryMessages > 0;
  if (withTelemetry) list.push({ name: 'telemetry messages/s (right)', color: '#bcbd22', points: series(b, (x) => x.telemetryMessages), axis: 'right', dash: '5 2' });
  return lineChart({
    title: 'Connections and telemetry over time',
    width: WIDE,
    x: timeAxis(report),
    y: { label: 'devices' },
    ...(withTelemetry ? { y2: { label: 'telemetry messages per second' } } : {}),
    series: list,
    markers: holdMarker(report),
  });
}

/** p50 (solid) and p99 (dashed) of one stage over time. */
export function stageLatencyChart(report: LoadReport, stage: Stage): string {
  // the provisioning stages happen before the hold: the x axis ends with the provisioning phase
  const end = Math.ceil(report.summary.provisioningMs / 1000);
  const b = report.timeSeries.slice(0, end + 1);
  return lineChart({
    title: `${STAGE_LABELS[stage]}: latency over time`,
    width: HALF,
    height: 250,
    x: timeAxis(report, end),
    y: { label: 'ms' },
    series: [
      { name: 'p50', color: STAGE_COLORS[stage], points: series(b, (x) => x.latency[stage]?.p50 ?? null), width: 2 },
      { name: 'p99', color: STAGE_COLORS[stage], points: series(b, (x) => x.latency[stage]?.p99 ?? null), dash: '5 3' },
    ],
  });
}

/** x of a percentile on the HDR plot: log10(1 / (1 - p)); 100% sits at the end of the axis. */
export function percentileX(p: number, end: number): number {
  return p >= 100 ? end : Math.min(end, Math.log10(1 / (1 - p / 100)));
}

export function distributionChart(report: LoadReport): string {
  const stages = Object.entries(report.stages) as Array<[Stage, StageReport]>;
  const end = Math.max(1, ...stages.map(([, s]) => Math.log10(Math.max(2, s.count))));
  const ticks: Tick[] = [];
  for (let k = 0; k <= Math.floor(end + 1e-9); k++) ticks.push({ value: k, label: k === 0 ? '0%' : `${(100 * (1 - 10 ** -k)).toFixed(Math.max(0, k - 2))}%` });
  return lineChart({
    title: 'Latency distribution (HDR percentile curve)',
    width: WIDE,
    height: 360,
    x: { label: 'percentile', min: 0, max: end, ticks },
    y: { label: 'ms (log scale)', scale: 'log' },
    series: stages.map(([stage, s]) => ({
      name: STAGE_LABELS[stage],
      color: STAGE_COLORS[stage],
      width: stage === 'total' ? 2.4 : 1.8,
      points: s.curve.map(([p, v]) => [percentileX(p, Math.log10(Math.max(2, s.count))), v] as [number, number]),
    })),
  });
}

function table(head: string[], rows: Array<Array<string | number>>, numeric: boolean[] = []): string {
  const th = head.map((h, i) => `<th${numeric[i] ? ' class="n"' : ''}>${esc(h)}</th>`).join('');
  const tr = rows.map((r) => `<tr>${r.map((c, i) => `<td${numeric[i] ? ' class="n"' : ''}>${esc(String(c))}</td>`).join('')}</tr>`).join('\n');
  return `<table><thead><tr>${th}</tr></thead><tbody>\n${tr}\n</tbody></table>`;
}

const CSS = `
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #222; background: #fafafa; max-width: 980px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #555; font-size: 13px; margin-bottom: 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card .v { font-size: 20px; font-weight: 600; } .card .k { font-size: 12px; color: #666; }
.card.bad .v { color: #c00; } .card.warn .v { color: #c60; } .card.good .v { color: #1a7f37; }
.chart { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 6px 0; }
.grid { display: grid; grid-template-columns: 478px 478px; gap: 6px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; } th { background: #f0f0f0; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { font-size: 12px; color: #666; max-width: 900px; }
`;

export function renderHtmlReport(report: LoadReport): string {
  const s = report.summary;
  const o = report.options;
  const card = (k: string, v: string | number, cls = '') => `<div class="card ${cls}"><div class="v">${esc(String(v))}</div><div class="k">${esc(k)}</div></div>`;
  const stages = Object.entries(report.stages) as Array<[Stage, StageReport]>;
  const m = report.machine;
  const title = `provisiond fleet run: ${s.devices.toLocaleString('en-US')} devices${s.children ? ` + ${s.children} hub children` : ''}`;
  const how = [o.rate ? `${o.rate} devices/s` : '', o.concurrency ? `concurrency ${o.concurrency}` : ''].filter(Boolean).join(', ');

  const parts: string[] = [];
  parts.push(
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8">',
    `<title>${esc(title)}</title>`,
    `<style>${CSS}</style></head><body>`,
    `<h1>${esc(title)}</h1>`,
    `<div class="meta">${esc(report.startedAt)} &middot; target ${esc(report.target.apiUrl)}${report.target.local ? ' (throw-away service in the same process)' : ''} &middot; mix ${esc(o.mix)} &middot; ${esc(how)}${
      m ? ` &middot; ${esc(`${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}`)}` : ''
    }</div>`,
    '<div class="cards">',
    card('provisioned', s.provisioned.toLocaleString('en-US'), 'good'),
    card('devices/s (provisioning phase)', s.provisionedPerSecond),
    card('total p50 / p99 (ms)', report.stages.total ? `${ms(report.stages.total.p50Ms)} / ${ms(report.stages.total.p99Ms)}` : '-'),
    card('failed', s.failed, s.failed ? 'bad' : 'good'),
    card('never acknowledged (by design)', s.neverAck, s.neverAck ? 'warn' : ''),
    card('peak held connections', s.peakHeld.toLocaleString('en-US')),
    card('wall time', `${(s.wallMs / 1000).toFixed(1)} s`),
    '</div>',
    '<h2>Throughput</h2>',
    throughputChart(report),
    eventsChart(report),
    connectionsChart(report),
    '<h2>Latency over time (p50 solid, p99 dashed, of the devices that finished the stage in that second)</h2>',
    '<div class="grid">',
    ...MAIN_STAGES.filter((st) => report.stages[st]).map((st) => stageLatencyChart(report, st)),
    '</div>',
    '<h2>Latency distribution</h2>',
    distributionChart(report),
    '<p class="note">HDR histograms (HdrHistogram, 3 significant digits, recorded in microseconds). The x axis is log-scaled in 1/(1-percentile), so the tail (99%, 99.9%) gets as much room as the median. Each stage\'s compressed histogram is in the JSON report (<code>stages.&lt;stage&gt;.hdr</code>).</p>',
    '<h2>Per-stage latency (ms)</h2>',
    table(
      ['stage', 'count', 'min', 'mean', 'p50', 'p90', 'p99', 'p99.9', 'max'],
      stages.map(([, st]) => [st.label, st.count, ms(st.minMs), ms(st.meanMs), ms(st.p50Ms), ms(st.p90Ms), ms(st.p99Ms), ms(st['p99.9Ms']), ms(st.maxMs)]),
      [false, true, true, true, true, true, true, true, true],
    ),
    '<h2>Summary</h2>',
    table(
      ['', 'value'],
      [
        ['devices provisioned directly', s.devices],
        ['hubs / children onboarded through them', `${s.hubs} / ${s.children} (${s.childrenProvisioned} provisioned)`],
        ['provisioned (devices and children)', s.provisioned],
        ['never acknowledged (left "configuring")', s.neverAck],
        ['failed', s.failed],
        ['factory resets re-provisioned', `${s.reprovisioned} of ${s.factoryResets}`],
        ['connections cut / reconnected / reconnect failures', `${s.drops} / ${s.reconnects} / ${s.reconnectFailures}`],
        ['unexpected disconnects (not cut by the run)', s.unexpectedDisconnects],
        ['peak in flight / peak held', `${s.peakInFlight} / ${s.peakHeld}`],
        ['telemetry messages (bytes)', `${s.telemetryMessages.toLocaleString('en-US')} (${formatNumber(s.telemetryBytes / 2 ** 20)} MiB)`],
        ['provisioning phase / hold / wall', `${(s.provisioningMs / 1000).toFixed(1)} s / ${(s.holdMs / 1000).toFixed(1)} s / ${(s.wallMs / 1000).toFixed(1)} s`],
        ['source addresses', o.sourceAddresses.length ? `${o.sourceAddresses.length} (${o.sourceAddresses[0]} .. ${o.sourceAddresses.at(-1)})` : 'default'],
        ['registered in bulk before the clock started', o.preRegistered ? `${o.preRegistered} (times start at the claim)` : 'no (each device registers in its run)'],
        ['seed / run id', `${o.seed} / ${o.runId}`],
      ],
      [false, true],
    ),
    '<h2>By model</h2>',
    table(
      ['model', 'devices', 'provisioned', 'never-ack', 'failed'],
      Object.entries(report.byModel).map(([name, c]) => [name, c.devices, c.provisioned, c.neverAck, c.failed]),
      [false, true, true, true, true],
    ),
    '<h2>Errors</h2>',
    report.errors.length
      ? table(
          ['stage', 'code', 'count', 'example'],
          report.errors.map((e) => [e.stage, e.code, e.count, e.example]),
          [false, false, true, false],
        )
      : '<p>None.</p>',
  );
  if (report.serviceStates) {
    parts.push('<h2>Service records by state (after the run)</h2>', table(['state', 'devices'], Object.entries(report.serviceStates).map(([k, v]) => [k, v]), [false, true]));
  }
  parts.push(
    '<h2>Options</h2>',
    table(
      ['option', 'value'],
      Object.entries(o).map(([k, v]) => [k, Array.isArray(v) ? (v.length ? v.join(', ') : '-') : String(v)]),
    ),
    '</body></html>',
  );
  return parts.join('\n');
}
