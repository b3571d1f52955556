/** The fleet runner's pure parts: planning, statistics, charts, the HTML report, the command line. */
import { describe, expect, it } from 'vitest';
import { parseFleetArgs, UsageError } from '../../firmware-sim/fleet/args.js';
import { distributionChart, percentileX, renderHtmlReport } from '../../firmware-sim/fleet/html.js';
import { assignModels, choose, countOf, formatMix, parseMix, parseSourceAddresses, planFleet, rng } from '../../firmware-sim/fleet/plan.js';
import { buildLoadReport, formatSummary, reportToJson, type LoadReport, type RunFacts } from '../../firmware-sim/fleet/report.js';
import { StageHistograms, TimeSeries, percentileCurve, summarize, newHistogram } from '../../firmware-sim/fleet/stats.js';
import { escapeXml, lineChart, logTicks, niceTicks } from '../../firmware-sim/fleet/svg.js';
import type { DeviceResult } from '../../firmware-sim/fleet/runner.js';
import { MODELS } from '../../firmware-sim/models.js';

describe('mix and plan', () => {
  it('parses model weights and refuses what is not one', () => {
    expect(parseMix('thermostat:6,camera:3,hub:1')).toEqual({ thermostat: 6, camera: 3, hub: 1 });
    expect(parseMix(' camera , hub:0.5 ')).toEqual({ camera: 1, hub: 0.5 });
    expect(formatMix({ hub: 1, thermostat: 6, camera: 0 })).toBe('thermostat:6,hub:1');
    expect(() => parseMix('toaster:1')).toThrow(/unknown model "toaster"/);
    expect(() => parseMix('thermostat:x')).toThrow(/model:weight/);
    expect(() => parseMix('thermostat:0')).toThrow(/above 0/);
    expect(() => parseMix('camera:1,camera:2')).toThrow(/twice/);
  });

  it('gives exact counts per model, spread over the run', () => {
    const models = assignModels(100, { thermostat: 6, camera: 3, hub: 1 });
    expect(models).toHaveLength(100);
    const count = (m: string) => models.filter((x) => x === m).length;
    expect([count('thermostat'), count('camera'), count('hub')]).toEqual([60, 30, 10]);
    // hubs every ~10 devices, not bunched at one end
    const hubs = models.flatMap((m, i) => (m === 'hub' ? [i] : []));
    for (let k = 1; k < hubs.length; k++) expect(hubs[k]! - hubs[k - 1]!).toBe(10);
    // largest remainder: 7 devices of 1:1:1 -> 3, 2, 2
    const seven = assignModels(7, { thermostat: 1, camera: 1, hub: 1 });
    expect(['thermostat', 'camera', 'hub'].map((m) => seven.filter((x) => x === m).length)).toEqual([3, 2, 2]);
    expect(assignModels(3, { camera: 1 })).toEqual(['camera', 'camera', 'camera']);
  });

  it('turns fractions into counts and chooses distinct members reproducibly', () => {
    expect(countOf(0, 100)).toBe(0);
    expect(countOf(0.1, 29)).toBe(3);
    expect(countOf(0.001, 29)).toBe(1); // above 0 means at least one
    expect(countOf(2, 5)).toBe(5);
    const pool = Array.from({ length: 50 }, (_, i) => i);
    const a = choose(pool, 10, rng(1));
    expect(new Set(a).size).toBe(10);
    expect(choose(pool, 10, rng(1))).toEqual(a);
    expect(choose(pool, 10, rng(2))).not.toEqual(a);
    expect(choose([1, 2], 5, rng(1)).sort()).toEqual([1, 2]);
  });

  it('plans chaos on devices that are not hubs, one role each, drops only when holding', () => {
    const models = assignModels(40, { thermostat: 6, camera: 3, hub: 1 });
    const plan = planFleet({ devices: 40, models, neverAckFraction: 0.1, factoryResetFraction: 0.1, dropFraction: 0.2, holding: true, seed: 9 });
    expect([plan.neverAck.size, plan.factoryReset.size, plan.drop.size]).toEqual([4, 4, 7]);
    const all = [...plan.neverAck, ...plan.factoryReset, ...plan.drop];
    expect(new Set(all).size).toBe(all.length);
    for (const i of all) expect(models[i]).not.toBe('hub');
    expect(planFleet({ devices: 40, models, neverAckFraction: 0.1, factoryResetFraction: 0.1, dropFraction: 0.2, holding: true, seed: 9 })).toEqual(plan);
    expect(planFleet({ devices: 40, models, dropFraction: 0.5, holding: false, seed: 9 }).drop.size).toBe(0);
  });

  it('source addresses: a count on loopback or a list', () => {
    expect(parseSourceAddresses('3')).toEqual(['127.0.0.1', '127.0.0.2', '127.0.0.3']);
    expect(parseSourceAddresses('10.0.0.5, 10.0.0.6')).toEqual(['10.0.0.5', '10.0.0.6']);
    expect(() => parseSourceAddresses('0')).toThrow(/1-254/);
    expect(() => parseSourceAddresses('300')).toThrow(/1-254/);
    expect(() => parseSourceAddresses('example.com')).toThrow(/not an IP address/);
  });
});

describe('models', () => {
  it('telemetry: thermostats small and frequent, cameras large and rare, all within the broker limit', () => {
    for (const m of Object.values(MODELS)) {
      const bytes = Buffer.byteLength(JSON.stringify(m.telemetry(7)));
      expect(Math.abs(bytes - m.telemetryBytes) / m.telemetryBytes).toBeLessThan(0.1);
      expect(bytes).toBeLessThan(65_536); // mqtt.maxPayloadBytes default (docs/protocol.md §20)
    }
    expect(MODELS.thermostat.telemetryIntervalMs).toBeLessThan(MODELS.camera.telemetryIntervalMs);
    expect(MODELS.thermostat.telemetryBytes * 100).toBeLessThan(MODELS.camera.telemetryBytes);
  });
});

describe('statistics', () => {
  it('HDR summary: percentiles within 3 significant digits, capped at the maximum', () => {
    const h = newHistogram();
    for (let v = 1; v <= 10_000; v++) h.recordValue(v * 100); // 0.1 ms .. 1000 ms, in microseconds
    const s = summarize(h);
    expect(s.count).toBe(10_000);
    expect(s.minMs).toBe(0.1);
    expect(s.maxMs).toBe(1000);
    expect(Math.abs(s.p50Ms - 500) / 500).toBeLessThan(0.001);
    expect(Math.abs(s.p99Ms - 990) / 990).toBeLessThan(0.001);
    expect(s['p99.9Ms']).toBeLessThanOrEqual(s.maxMs);
    const curve = percentileCurve(h);
    expect(curve[0]![0]).toBe(0);
    expect(curve.at(-1)).toEqual([100, 1000]);
    for (let i = 1; i < curve.length; i++) {
      expect(curve[i]![0]).toBeGreaterThan(curve[i - 1]![0]);
      expect(curve[i]![1]).toBeGreaterThanOrEqual(curve[i - 1]![1]);
    }
    expect(summarize(newHistogram()).count).toBe(0);
    expect(percentileCurve(newHistogram())).toEqual([]);
  });

  it('stage histograms count what was recorded, in ms', () => {
    const st = new StageHistograms();
    st.record('claim', 12.5);
    st.record('claim', 0); // below the resolution: counted as 1 us
    st.record('total', 800);
    expect(st.count('claim')).toBe(2);
    expect(st.stages()).toEqual(['claim', 'total']);
    expect(summarize(st.get('total')!).maxMs).toBeCloseTo(800, 0);
    expect(st.encoded('reconnect')).toBeUndefined();
    expect(st.encoded('claim')).toMatch(/^[A-Za-z0-9+/=]+$/);
    st.destroy();
  });

  it('per-second buckets: counts, latency percentiles and gauges', () => {
    const ts = new TimeSeries(1000);
    ts.count('started', 1000);
    ts.count('provisioned', 1500);
    ts.count('provisioned', 2100);
    ts.count('failed', 3999);
    for (const v of [10, 20, 30, 40, 100]) ts.latency('total', v, 2500);
    ts.sample({ inFlight: 5, held: 1, telemetryMessages: 10, telemetryBytes: 1000 }, 1200);
    ts.sample({ inFlight: 4, held: 2, telemetryMessages: 25, telemetryBytes: 2500 }, 1900); // last in the second wins
    ts.sample({ inFlight: 0, held: 3, telemetryMessages: 40, telemetryBytes: 4000 }, 3500);
    const b = ts.buckets();
    expect(b.map((x) => x.t)).toEqual([0, 1, 2]);
    expect(b.map((x) => [x.started, x.provisioned, x.failed])).toEqual([
      [1, 1, 0],
      [0, 1, 0],
      [0, 0, 1],
    ]);
    expect(b[1]!.latency.total).toEqual({ n: 5, p50: 30, p99: 100 });
    expect(b[0]!.latency.total).toBeUndefined();
    // gauges: second 1 has no sample and keeps second 0's; telemetry is per second
    expect(b.map((x) => [x.inFlight, x.held, x.telemetryMessages, x.telemetryBytes])).toEqual([
      [4, 2, 25, 2500],
      [4, 2, 0, 0],
      [0, 3, 15, 1500],
    ]);
  });
});

describe('charts', () => {
  it('nice ticks cover the data with round numbers', () => {
    expect(niceTicks(0, 1456)).toEqual([0, 500, 1000, 1500]);
    expect(niceTicks(0, 10)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(0, 0.7)).toEqual([0, 0.2, 0.4, 0.6, 0.8]);
    expect(logTicks(1, 1000)).toEqual([1, 10, 100, 1000]);
    expect(logTicks(10, 100)).toEqual([10, 20, 50, 100]);
  });

  it('draws series as paths, breaks them at gaps, escapes text', () => {
    const svg = lineChart({
      title: 'a <b> & "c"',
      x: { label: 'x' },
      y: { label: 'y' },
      series: [{ name: 's<1>', color: '#123456', points: [[0, 1], [1, 2], [2, null], [3, 4], [4, 5]] }],
    });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg).toContain('<title>a &lt;b&gt; &amp; &quot;c&quot;</title>');
    expect(svg.match(/<path class="series"/g)).toHaveLength(2);
    expect(svg).toContain('s&lt;1&gt;');
    expect(svg).not.toContain('NaN');
    expect(escapeXml(`<'&">`)).toBe('&lt;&#39;&amp;&quot;&gt;');
  });

  it('stacks bar series per x and scales the axis to the stacked total', () => {
    const svg = lineChart({
      title: 'events',
      x: { label: 'x', min: 0, max: 3 },
      y: { label: 'y' },
      series: [
        { name: 'a', color: '#f00', bar: true, points: [[0, 1], [1, 0], [2, 3]] },
        { name: 'b', color: '#00f', bar: true, points: [[0, 2], [1, null], [2, 4]] },
      ],
    });
    expect(svg.match(/<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="[\d.]+" fill="#(f00|00f)">/g)).toHaveLength(4);
    expect(svg).toContain('>8<'); // the axis reaches the stacked 7 (3 + 4), rounded up to a tick
    expect(svg).toContain('<title>b: 4 at 2</title>');
  });

  it('log axes skip values that cannot be drawn', () => {
    const svg = lineChart({ title: 't', x: { label: 'x' }, y: { label: 'y', scale: 'log' }, series: [{ name: 's', color: '#000', points: [[0, 0], [1, 10], [2, 100]] }] });
    expect(svg.match(/<path class="series"/g)).toHaveLength(1);
    expect(svg).not.toContain('NaN');
    expect(svg).not.toContain('Infinity');
  });

  it('puts percentiles on the HDR axis: 90% at 1, 99% at 2, 100% at the end', () => {
    expect(percentileX(0, 3)).toBe(0);
    expect(percentileX(90, 3)).toBeCloseTo(1, 9);
    expect(percentileX(99, 3)).toBeCloseTo(2, 9);
    expect(percentileX(100, 3.3)).toBe(3.3);
    expect(percentileX(99.99, 3)).toBe(3);
  });
});

function facts(over: Partial<RunFacts> = {}): RunFacts {
  const hist = new StageHistograms();
  for (let i = 1; i <= 200; i++) {
    hist.record('claim', 5 + (i % 10));
    hist.record('csrToCert', 50 + i);
    hist.record('configToAck', 100 + i);
    hist.record('total', 160 + 2 * i);
  }
  const series = new TimeSeries(0);
  for (let t = 0; t < 10; t++) {
    for (let k = 0; k < 20; k++) {
      series.count('started', t * 1000 + k);
      series.count('provisioned', t * 1000 + 500 + k);
      series.latency('total', 200 + t * 10 + k, t * 1000 + 500);
    }
    series.sample({ inFlight: 20, held: 20 * t, telemetryMessages: 100 * t, telemetryBytes: 8000 * t }, t * 1000 + 900);
  }
  const results: DeviceResult[] = [
    ...Array.from({ length: 199 }, (_, i): DeviceResult => ({ deviceId: `d${i}`, model: i % 2 ? 'camera' : 'thermostat', ok: true, outcome: 'provisioned' })),
    { deviceId: 'bad', model: 'camera', ok: false, outcome: 'failed', stage: 'claim', error: 'CLAIM_RATE_LIMITED' },
  ];
  return {
    startedAt: new Date('2026-11-22T10:00:00Z'),
    finishedAt: new Date('2026-11-22T10:00:10Z'),
    apiUrl: 'http://127.0.0.1:8080',
    options: { devices: 200, concurrency: 20, mix: 'thermostat:1,camera:1', childrenPerHub: 2, holdSeconds: 0, telemetry: false, neverAckFraction: 0, factoryResetFraction: 0, dropFraction: 0, sourceAddresses: [], preRegistered: 0, timeoutMs: 15000, seed: 1, runId: 'sim-abc' },
    planned: { hubs: 0, children: 0, neverAck: 0, factoryResets: 0, drops: 0 },
    results,
    provisioningMs: 10_000,
    holdMs: 0,
    wallMs: 10_000,
    counters: { drops: 0, reconnects: 0, reconnectFailures: 0, unexpectedDisconnects: 0, reprovisioned: 0, peakInFlight: 20, peakHeld: 180, telemetryMessages: 900, telemetryBytes: 72000 },
    histograms: hist,
    series: series.buckets(),
    errors: [{ code: 'CLAIM_RATE_LIMITED', stage: 'claim', count: 1, example: '429 CLAIM_RATE_LIMITED <too many>' }],
    ...over,
  };
}

describe('reports', () => {
  it('the JSON report: summary, stages with percentiles and curve, by model, no per-device data', () => {
    const r = buildLoadReport(facts());
    expect(r.kind).toBe('provisiond-fleet-report');
    expect(r.summary).toMatchObject({ devices: 200, children: 0, total: 200, provisioned: 199, failed: 1, neverAck: 0, provisionedPerSecond: 19.9 });
    expect(r.byModel).toEqual({ thermostat: { devices: 100, provisioned: 100, neverAck: 0, failed: 0 }, camera: { devices: 100, provisioned: 99, neverAck: 0, failed: 1 } });
    expect(Object.keys(r.stages)).toEqual(['claim', 'csrToCert', 'configToAck', 'total']);
    expect(r.stages.total).toMatchObject({ count: 200, label: 'total (claim → provisioned)', minMs: 162, maxMs: 560 });
    expect(r.stages.total!.p50Ms).toBeCloseTo(360, 0);
    expect(r.timeSeries).toHaveLength(10);
    expect(JSON.stringify(r)).not.toContain('"d17"');
    expect(formatSummary(r)).toMatch(/failed\s+1\s+claim\/CLAIM_RATE_LIMITED x1/);
  });

  it('the JSON text: parses back to the report, one line per time series row', () => {
    const r = buildLoadReport(facts());
    const text = reportToJson(r);
    expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(r)));
    const lines = text.split('\n');
    expect(lines.filter((l) => l.startsWith('  {"t":'))).toHaveLength(10);
    expect(lines).toContain(' "summary": {');
    expect(lines).toContain('  "provisioned": 199,');
  });

  it('the HTML report: every chart as inline SVG, the tables, nothing fetched, text escaped', () => {
    const r: LoadReport = buildLoadReport(facts());
    r.machine = { cpus: 2, cpuModel: 'Test CPU', memoryGiB: 24, node: '20.0.0', platform: 'linux x64' };
    const html = renderHtmlReport(r);
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html.match(/<svg /g)).toHaveLength(8); // throughput, events, connections, 4 stages over time, distribution
    for (const h of ['Throughput', 'Latency over time', 'Latency distribution', 'Per-stage latency (ms)', 'Summary', 'By model', 'Errors', 'Options']) expect(html).toContain(`<h2>${h}`);
    expect(html).toContain('429 CLAIM_RATE_LIMITED &lt;too many&gt;');
    expect(html).toContain('2 × Test CPU, 24 GiB, Node 20.0.0');
    expect(html).not.toMatch(/<script|<link|\bsrc=|url\(/i);
    expect(html).not.toContain('NaN');
    // the HDR chart names each stage and has its percentile ticks
    const dist = distributionChart(r);
    expect(dist).toContain('>90%<');
    expect(dist).toContain('>99%<');
    expect(dist.match(/<path class="series"/g)).toHaveLength(4);
  });
});

describe('command line', () => {
  const deployment = ['--api-url', 'https://prov.example.com/', '--factory-key', 'pdk_f', '--installer-key', 'pdk_i'];

  it('defaults, and every option', () => {
    expect(parseFleetArgs(['--local'])).toEqual({
      local: true,
      devices: 100,
      childrenPerHub: 2,
      holdSeconds: 0,
      telemetry: true,
      dropFraction: 0,
      factoryResetFraction: 0,
      neverAckFraction: 0,
      preRegister: false,
      timeoutMs: 15_000,
      quiet: false,
    });
    const all = parseFleetArgs([
      ...deployment,
      '--devices', '2000', '--rate', '25', '--concurrency', '50', '--mix', 'thermostat:6,camera:3,hub:1', '--children-per-hub', '3',
      '--hold', '30', '--drop-rate', '0.05', '--factory-reset-fraction', '0.01', '--never-ack-fraction', '0.02', '--seed', '7',
      '--source-addresses', '4', '--timeout', '20', '--json', 'r.json', '--html', 'r.html', '--quiet', '--no-telemetry',
      '--pre-register',
    ]);
    expect(all).toEqual({
      local: false,
      apiUrl: 'https://prov.example.com',
      factoryKey: 'pdk_f',
      installerKey: 'pdk_i',
      devices: 2000,
      rate: 25,
      concurrency: 50,
      mix: { thermostat: 6, camera: 3, hub: 1 },
      childrenPerHub: 3,
      holdSeconds: 30,
      telemetry: false,
      dropFraction: 0.05,
      factoryResetFraction: 0.01,
      neverAckFraction: 0.02,
      seed: 7,
      sourceAddresses: ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'],
      preRegister: true,
      timeoutMs: 20_000,
      json: 'r.json',
      html: 'r.html',
      quiet: true,
    });
    expect(parseFleetArgs(['--help'])).toBeUndefined();
  });

  it('keys may come from the environment', () => {
    const cli = parseFleetArgs(['--api-url', 'http://localhost:8080'], { FLEET_FACTORY_KEY: 'f', FLEET_INSTALLER_KEY: 'i' });
    expect(cli).toMatchObject({ factoryKey: 'f', installerKey: 'i' });
  });

  it('refuses what does not make sense, saying why', () => {
    const bad: Array<[string[], RegExp]> = [
      [[], /--api-url .* or --local/],
      [['--local', ...deployment], /either --local or --api-url/],
      [['--api-url', 'http://x'], /needs --factory-key and --installer-key/],
      [['--api-url', 'ftp://x', '--factory-key', 'f', '--installer-key', 'i'], /http:\/\/ or https:\/\//],
      [['--local', '--devices', '0'], /--devices must be an integer from 1/],
      [['--local', '--devices', '2.5'], /--devices/],
      [['--local', '--drop-rate', '0.1'], /--hold/],
      [['--local', '--never-ack-fraction', '1.5'], /from 0 to 1/],
      [['--local', '--mix', 'fridge:1'], /unknown model/],
      [['--local', '--source-addresses', '0'], /1-254/],
      [['--local', '--bogus'], /bogus/],
      [[...deployment, '--data-dir', '/tmp/x'], /--data-dir is for --local/],
    ];
    for (const [argv, message] of bad) expect(() => parseFleetArgs(argv), argv.join(' ')).toThrow(message);
    expect(() => parseFleetArgs(['--local', '--rate', '-1'])).toThrow(UsageError);
  });
});
