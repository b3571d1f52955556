/**
 * The fleet runner on real parts (a real service, real TLS): a small mixed fleet with a hub and its
 * children, never-acknowledging devices, a cut connection and a factory reset. Its reports must
 * agree with what the service recorded.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as hdr from 'hdr-histogram-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFleetCli } from '../../firmware-sim/cli.js';
import { renderHtmlReport, runFleet, type LoadReport, type RunningFleet } from '../../firmware-sim/index.js';
import { startTestService, type TestService } from '../helpers/service.js';

let ts: TestService;
let dir: string;
beforeAll(async () => {
  ts = await startTestService();
  dir = await mkdtemp(join(tmpdir(), 'fleet-report-'));
});
afterAll(async () => {
  await ts?.stop();
  await rm(dir, { recursive: true, force: true });
});

const sum = (r: LoadReport, key: 'started' | 'provisioned' | 'neverAck' | 'failed' | 'drops' | 'reconnects' | 'reprovisioned' | 'children' | 'telemetryMessages') =>
  r.timeSeries.reduce((n, b) => n + b[key], 0);

describe('fleet runner', () => {
  let fleet: RunningFleet;

  it('provisions a mixed fleet with chaos, holds it and reports counts that match the service', async () => {
    fleet = await runFleet({
      apiUrl: ts.running.httpUrl,
      factoryKey: ts.keys.factory,
      installerKey: ts.keys.installer,
      devices: 30,
      concurrency: 8,
      mix: 'thermostat:19,camera:10,hub:1',
      childrenPerHub: 2,
      neverAckFraction: 0.1, // 3 of the 29 devices that are not hubs
      factoryResetFraction: 0.03, // 1
      dropFraction: 0.03, // 1
      holdSeconds: 2.5,
      hold: true, // keep them for the checks below
      telemetryIntervalMs: { thermostat: 300, camera: 800, hub: 500 },
      sourceAddresses: ['127.0.0.1', '127.0.0.2', '127.0.0.3'],
      seed: 42,
    });
    const load = fleet.load;
    const s = load.summary;
    expect(load.errors).toEqual([]);
    expect(s).toMatchObject({ devices: 30, children: 2, total: 32, hubs: 1, childrenProvisioned: 2, provisioned: 29, neverAck: 3, failed: 0 });
    expect(s).toMatchObject({ factoryResets: 1, reprovisioned: 1, drops: 1, reconnects: 1, reconnectFailures: 0, unexpectedDisconnects: 0 });
    expect(load.byModel).toEqual({
      hub: { devices: 1, provisioned: 1, neverAck: 0, failed: 0 },
      thermostat: expect.objectContaining({ devices: 20 }),
      camera: expect.objectContaining({ devices: 11 }),
    });
    expect(load.byModel.thermostat!.neverAck + load.byModel.camera!.neverAck).toBe(3);

    // what the service recorded: the never-ack devices wait in "configuring", the rest are provisioned
    expect(await ts.running.store.countDevicesByState()).toEqual({ provisioned: 29, configuring: 3 });
    const hubResult = fleet.report.results.find((r) => r.model === 'hub')!;
    const children = fleet.report.results.filter((r) => r.hubId === hubResult.deviceId);
    expect(children).toHaveLength(2);
    for (const c of children) expect(await ts.running.store.getDevice(c.deviceId)).toMatchObject({ state: 'provisioned', hubId: hubResult.deviceId });
    const reset = fleet.report.results.find((r) => r.reprovisionMs !== undefined)!;
    expect((await ts.running.store.listEvents(reset.deviceId)).map((e) => e.type)).toContain('reprovisioning');
    expect((await ts.running.store.listCertificates(reset.deviceId)).map((c) => c.status).sort()).toEqual(['active', 'revoked']);

    // histograms: one value per device and stage (never-ack devices have no config/total stage)
    expect(load.stages.claim!.count).toBe(32);
    expect(load.stages.csrToCert!.count).toBe(32);
    expect(load.stages.configToAck!.count).toBe(29);
    expect(load.stages.total!.count).toBe(29);
    expect(load.stages.reprovision!.count).toBe(1);
    expect(load.stages.reconnect!.count).toBe(1);
    for (const st of Object.values(load.stages)) {
      expect(st.p50Ms).toBeGreaterThan(0);
      expect(st.p50Ms).toBeLessThanOrEqual(st.p90Ms);
      expect(st.p90Ms).toBeLessThanOrEqual(st.p99Ms);
      expect(st.p99Ms).toBeLessThanOrEqual(st['p99.9Ms']);
      expect(st['p99.9Ms']).toBeLessThanOrEqual(st.maxMs);
      expect(st.curve.at(-1)).toEqual([100, st.maxMs]);
      const decoded = hdr.decodeFromCompressedBase64(st.hdr, 32, false);
      expect(decoded.totalCount).toBe(st.count);
      decoded.destroy();
    }
    // total = claim + CSR -> cert + config -> ack for each device: the medians are consistent
    expect(load.stages.total!.maxMs).toBeGreaterThanOrEqual(load.stages.configToAck!.p50Ms);

    // the time series adds up to the same counts
    expect(sum(load, 'started')).toBe(32);
    expect(sum(load, 'provisioned')).toBe(29);
    expect(sum(load, 'children')).toBe(2);
    expect(sum(load, 'neverAck')).toBe(3);
    expect(sum(load, 'failed')).toBe(0);
    expect(sum(load, 'drops')).toBe(1);
    expect(sum(load, 'reconnects')).toBe(1);
    expect(sum(load, 'reprovisioned')).toBe(1);
    expect(sum(load, 'telemetryMessages')).toBe(s.telemetryMessages);
    expect(s.telemetryMessages).toBeGreaterThan(0);
    expect(load.timeSeries.reduce((n, b) => n + (b.latency.total?.n ?? 0), 0)).toBe(29);
    expect(Math.max(...load.timeSeries.map((b) => b.held))).toBeLessThanOrEqual(s.peakHeld);
    expect(s.peakHeld).toBe(30); // 26 provisioned + 3 never-ack + the hub (children use the hub's connection)

    // the legacy summary agrees
    expect(fleet.report).toMatchObject({ total: 32, provisioned: 29, failed: 0, neverAck: 3 });

    // held connections come from the source addresses in turn
    const locals = new Set(fleet.devices.map((d) => (d.client?.stream as { localAddress?: string } | undefined)?.localAddress));
    expect([...locals].sort()).toEqual(['127.0.0.1', '127.0.0.2', '127.0.0.3']);
    expect(fleet.devices.every((d) => d.client?.connected)).toBe(true);
  });

  it('renders a self-contained HTML report with the charts', () => {
    const html = renderHtmlReport(fleet.load);
    expect(html.match(/<svg /g)?.length).toBe(8); // throughput, events, connections, 4 stages over time, distribution
    for (const title of ['Throughput over time (per second)', 'Failures and chaos events over time (per second, stacked)', 'Connections and telemetry over time', 'Latency distribution (HDR percentile curve)', 'total (claim → provisioned): latency over time']) {
      expect(html).toContain(`<title>${title}</title>`);
    }
    expect(html).toMatch(/<path class="series" d="M[\d.]+,[\d.]+ L/);
    expect(html).toContain('<h2>Per-stage latency (ms)</h2>');
    expect(html).not.toMatch(/<script|<link|\bsrc=|url\(/i);
  });

  afterAll(async () => {
    await fleet?.stop();
  });
});

describe('fleet command line', () => {
  it('--local runs against a throw-away service in-process and writes both reports', async () => {
    const json = join(dir, 'r.json');
    const html = join(dir, 'r.html');
    const report = await runFleetCli({
      local: true,
      devices: 6,
      concurrency: 3,
      childrenPerHub: 1,
      mix: { thermostat: 2, camera: 1, hub: 2 }, // 3, 1, 2
      holdSeconds: 0,
      telemetry: false,
      dropFraction: 0,
      factoryResetFraction: 0,
      neverAckFraction: 0.2, // 1 of the 4 that are not hubs
      preRegister: true, // the 4 that are not hubs in one bulk import; hubs register in their runs
      timeoutMs: 15_000,
      quiet: true,
      json,
      html,
    }, { silent: true });
    expect(report.summary).toMatchObject({ devices: 6, children: 2, provisioned: 7, neverAck: 1, failed: 0 });
    expect(report.target.local).toBe(true);
    expect(report.options.preRegistered).toBe(4);
    expect(report.serviceStates).toEqual({ provisioned: 7, configuring: 1 });
    const written = JSON.parse(await readFile(json, 'utf8')) as LoadReport;
    expect(written.summary).toEqual(report.summary);
    expect(written.machine?.cpus).toBeGreaterThan(0);
    expect(await readFile(html, 'utf8')).toContain('<svg ');
  });
});
