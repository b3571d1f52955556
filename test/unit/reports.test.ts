import { describe, expect, it } from 'vitest';
import fleetReportSchema from '../../schemas/fleet-report.json' with { type: 'json' };
import type { ConfigItemStatus, Device, DeviceState, FleetReport } from '../../schemas/types.js';
import {
  DEVICE_CSV_COLUMNS,
  FleetReportBuilder,
  deviceCsvHeader,
  deviceCsvRow,
  missingItems,
} from '../../src/provisioning/reports.js';
import { createAjv, describeErrors, getValidator, type SchemaName, type Validator } from '../../src/schemas.js';

const TENANT = 'acme';
const NOW = new Date('2025-06-01T12:00:00.000Z');
const T0 = Date.parse('2025-05-01T00:00:00.000Z');
const at = (seconds: number): string => new Date(T0 + seconds * 1000).toISOString();

let seq = 0;
function device(state: DeviceState, extra: Partial<Device> = {}): Device {
  const d: Device = {
    id: `d${++seq}`,
    tenantId: TENANT,
    model: 'thermostat',
    state,
    createdAt: at(0),
    updatedAt: at(0),
    ...extra,
  };
  if (state !== 'registered' && state !== 'claimed' && !('certificateSerial' in extra)) d.certificateSerial = 'ab01';
  return d;
}

const item = (id: string, required: boolean, status: ConfigItemStatus['status']): ConfigItemStatus => ({ id, required, status });

const ajv = createAjv();
if (!ajv.getSchema(fleetReportSchema.$id)) ajv.addSchema(fleetReportSchema);
const validateReport: Validator<FleetReport> = getValidator<FleetReport>(ajv, 'fleet-report' as SchemaName);
const validateDevice: Validator<Device> = getValidator<Device>(ajv, 'device');

function expectValidReport(report: FleetReport): void {
  const ok = validateReport(report);
  expect(ok, describeErrors(validateReport.errors)).toBe(true);
}

function build(devices: readonly Device[], tenant = TENANT): FleetReport {
  const b = new FleetReportBuilder(tenant, NOW);
  for (const d of devices) {
    expect(validateDevice(d), describeErrors(validateDevice.errors)).toBe(true);
    b.add(d);
  }
  const report = b.build();
  expectValidReport(report);
  return report;
}

/** Minimal RFC 4180 reader, to check what a spreadsheet would see. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') (field += '"'), i++;
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') row.push(field), (field = '');
    else if (c === '\r' && text[i + 1] === '\n') row.push(field), rows.push(row), (row = []), (field = ''), i++;
    else field += c;
  }
  expect(field).toBe('');
  expect(row).toEqual([]);
  return rows;
}

describe('missingItems', () => {
  it('lists required items that are not applied, in item order', () => {
    const d = device('configuring', {
      config: { version: 2, items: [item('network', true, 'applied'), item('security', true, 'pending'), item('ntp', false, 'failed'), item('app', true, 'failed')] },
    });
    expect(missingItems(d)).toEqual(['security', 'app']);
  });

  it("puts 'identity' first while there is no certificate", () => {
    expect(missingItems(device('registered'))).toEqual(['identity']);
    expect(missingItems(device('claimed'))).toEqual(['identity']);
    // certificateSerial present but still claimed: the state decides.
    expect(missingItems(device('claimed', { certificateSerial: 'ff' }))).toEqual(['identity']);
    const noCert = device('stalled', { certificateSerial: undefined, config: { version: 1, items: [item('network', true, 'pending')] } });
    delete noCert.certificateSerial;
    expect(missingItems(noCert)).toEqual(['identity', 'network']);
    expect(missingItems(device('identity_issued'))).toEqual([]);
  });

  it('is empty for a provisioned device whatever its items say', () => {
    expect(missingItems(device('provisioned', { config: { version: 1, items: [item('network', true, 'pending')] } }))).toEqual([]);
    const noCert = device('provisioned');
    delete noCert.certificateSerial;
    expect(missingItems(noCert)).toEqual([]);
  });
});

describe('FleetReportBuilder', () => {
  it('an empty fleet gives a valid, all-zero report', () => {
    const r = build([]);
    expect(r).toEqual({
      tenantId: TENANT,
      generatedAt: '2025-06-01T12:00:00.000Z',
      total: 0,
      byState: {},
      provisionedPercent: 0,
      timeToProvisioned: { count: 0 },
      byProfile: [],
      byModel: [],
      bySite: [],
      stalled: [],
    });
  });

  it('counts every state present, omits zeros, and computes provisionedPercent over claimed-or-further devices', () => {
    const devices = [
      device('registered'),
      device('registered'),
      device('claimed'),
      device('identity_issued'),
      device('configuring'),
      device('provisioned'),
      device('provisioned'),
      device('failed'),
      device('released'),
      device('revoked'),
      device('decommissioned'),
    ];
    const r = build(devices);
    expect(r.total).toBe(11);
    expect(r.byState).toEqual({
      registered: 2,
      claimed: 1,
      identity_issued: 1,
      configuring: 1,
      provisioned: 2,
      failed: 1,
      released: 1,
      revoked: 1,
      decommissioned: 1,
    });
    expect('stalled' in r.byState).toBe(false);
    // 2 provisioned of 6 (claimed, identity_issued, configuring, 2 provisioned, failed) = 33.33 -> 33.3
    expect(r.provisionedPercent).toBe(33.3);
  });

  it('rounds provisionedPercent to 0.1 and gives 0 without a denominator', () => {
    const pct = (provisioned: number, others: number, outside = 0): number =>
      build([
        ...Array.from({ length: provisioned }, () => device('provisioned')),
        ...Array.from({ length: others }, () => device('stalled')),
        ...Array.from({ length: outside }, () => device('registered')),
      ]).provisionedPercent;
    expect(pct(2, 1)).toBe(66.7);
    expect(pct(1, 15)).toBe(6.3); // 6.25, half up
    expect(pct(1, 7)).toBe(12.5);
    expect(pct(1, 0, 5)).toBe(100);
    expect(pct(0, 3)).toBe(0);
    expect(pct(0, 0, 4)).toBe(0); // only registered devices: no denominator
    expect(build([device('released'), device('decommissioned')]).provisionedPercent).toBe(0);
  });

  describe('timeToProvisioned (nearest rank)', () => {
    const provisionedAfter = (seconds: number, claimedAt = 100): Device =>
      device('provisioned', { claimedAt: at(claimedAt), provisionedAt: at(claimedAt + seconds) });

    it('one value is both p50 and p95', () => {
      expect(build([provisionedAfter(42)]).timeToProvisioned).toEqual({ count: 1, p50Seconds: 42, p95Seconds: 42 });
    });

    it('two values: p50 is the lower, p95 the upper', () => {
      expect(build([provisionedAfter(90), provisionedAfter(30)]).timeToProvisioned).toEqual({ count: 2, p50Seconds: 30, p95Seconds: 90 });
    });

    it('twenty values: p50 is the 10th, p95 the 19th', () => {
      const secs = Array.from({ length: 20 }, (_, i) => (i + 1) * 10);
      const shuffled = secs.map((_, i) => secs[(i * 7) % 20]!); // a permutation: 7 is coprime with 20
      expect(shuffled).not.toEqual(secs);
      expect(build(shuffled.map((s) => provisionedAfter(s))).timeToProvisioned).toEqual({ count: 20, p50Seconds: 100, p95Seconds: 190 });
    });

    it('keeps sub-second precision', () => {
      const d = device('provisioned', { claimedAt: '2025-05-01T00:00:00.000Z', provisionedAt: '2025-05-01T00:00:01.250Z' });
      expect(build([d]).timeToProvisioned).toEqual({ count: 1, p50Seconds: 1.25, p95Seconds: 1.25 });
    });

    it('counts only provisioned devices with both timestamps in the current claim; omits percentiles when none', () => {
      const r = build([
        device('provisioned', { claimedAt: at(0) }),
        device('provisioned', { provisionedAt: at(10) }),
        device('provisioned'),
        device('configuring', { claimedAt: at(0), provisionedAt: at(10) }), // re-configuring: not provisioned now
        device('provisioned', { claimedAt: at(500), provisionedAt: at(100) }), // provisionedAt from an earlier claim
      ]);
      expect(r.timeToProvisioned).toEqual({ count: 0 });
      expect(r.provisionedPercent).toBe(80);
    });
  });

  it("groups by profile, model and site, sorted by key, with '(none)' for unset profile or site", () => {
    const r = build([
      device('provisioned', { model: 'hub', profileId: 'p-office', site: 'Berlin' }),
      device('configuring', { model: 'hub', profileId: 'p-office', site: 'Berlin' }),
      device('stalled', { model: 'camera', profileId: 'a-lab', stalledAt: at(5) }),
      device('registered', { model: 'thermostat' }),
      device('provisioned', { model: 'camera', site: 'Aachen' }),
    ]);
    expect(r.byProfile).toEqual([
      { key: '(none)', total: 2, byState: { registered: 1, provisioned: 1 }, provisionedPercent: 100 },
      { key: 'a-lab', total: 1, byState: { stalled: 1 }, provisionedPercent: 0 },
      { key: 'p-office', total: 2, byState: { configuring: 1, provisioned: 1 }, provisionedPercent: 50 },
    ]);
    expect(r.byModel).toEqual([
      { key: 'camera', total: 2, byState: { provisioned: 1, stalled: 1 }, provisionedPercent: 50 },
      { key: 'hub', total: 2, byState: { configuring: 1, provisioned: 1 }, provisionedPercent: 50 },
      { key: 'thermostat', total: 1, byState: { registered: 1 }, provisionedPercent: 0 },
    ]);
    expect(r.bySite).toEqual([
      { key: '(none)', total: 2, byState: { registered: 1, stalled: 1 }, provisionedPercent: 0 },
      { key: 'Aachen', total: 1, byState: { provisioned: 1 }, provisionedPercent: 100 },
      { key: 'Berlin', total: 2, byState: { configuring: 1, provisioned: 1 }, provisionedPercent: 50 },
    ]);
    for (const groups of [r.byProfile, r.byModel, r.bySite]) {
      expect(groups.reduce((n, g) => n + g.total, 0)).toBe(r.total);
    }
  });

  it('lists stalled devices by since (stalledAt, else updatedAt), then id, with their missing items', () => {
    const items = { version: 3, items: [item('network', true, 'applied'), item('security', true, 'failed'), item('extras', false, 'pending')] };
    const devices = [
      device('stalled', { id: 'zeta', stalledAt: at(100), deadlineAt: at(50), site: 'Berlin', profileId: 'p1', config: items }),
      device('stalled', { id: 'alpha', stalledAt: at(100), config: items }),
      device('stalled', { id: 'mid', updatedAt: at(60) }), // no stalledAt: updatedAt
      device('stalled', { id: 'early', stalledAt: at(10), updatedAt: at(500), certificateSerial: undefined }),
      device('configuring', { id: 'busy', stalledAt: at(1) }), // not stalled now
    ];
    delete devices[3]!.certificateSerial;
    const r = build(devices);
    expect(r.stalled).toEqual([
      { deviceId: 'early', model: 'thermostat', since: at(10), missing: ['identity'] },
      { deviceId: 'mid', model: 'thermostat', since: at(60), missing: [] },
      { deviceId: 'alpha', model: 'thermostat', since: at(100), missing: ['security'] },
      { deviceId: 'zeta', model: 'thermostat', site: 'Berlin', profileId: 'p1', since: at(100), deadlineAt: at(50), missing: ['security'] },
    ]);
  });

  it('orders stalled devices by instant, not by text', () => {
    const r = build([
      device('stalled', { id: 'a', stalledAt: '2025-05-01T10:00:00.5Z' }),
      device('stalled', { id: 'b', stalledAt: '2025-05-01T10:00:00Z' }),
    ]);
    expect(r.stalled.map((s) => s.deviceId)).toEqual(['b', 'a']);
  });

  it('can build again after more devices, and reports do not share state with the builder', () => {
    const b = new FleetReportBuilder(TENANT, NOW);
    b.add(device('stalled', { id: 's1', stalledAt: at(1) }));
    const first = b.build();
    first.stalled[0]!.missing.push('tampered');
    first.stalled.pop();
    b.add(device('provisioned', { claimedAt: at(0), provisionedAt: at(30) }));
    const second = b.build();
    expectValidReport(second);
    expect(second.total).toBe(2);
    expect(second.stalled).toEqual([{ deviceId: 's1', model: 'thermostat', since: at(1), missing: [] }]);
    expect(second.timeToProvisioned).toEqual({ count: 1, p50Seconds: 30, p95Seconds: 30 });
  });

  it("refuses a device of another tenant", () => {
    const b = new FleetReportBuilder(TENANT, NOW);
    expect(() => b.add(device('registered', { tenantId: 'other' }))).toThrow(/tenant/);
  });

  it('builds a 100,000-device report, streamed in pages, well under 2 s', () => {
    const states: DeviceState[] = ['registered', 'claimed', 'identity_issued', 'configuring', 'provisioned', 'provisioned', 'provisioned', 'stalled', 'failed', 'released', 'revoked', 'decommissioned'];
    const models = ['hub', 'camera', 'thermostat', 'lock', 'sensor'];
    const N = 100_000;
    const PAGE = 1_000;
    const make = (i: number): Device => {
      const state = states[i % states.length]!;
      const d: Device = {
        id: `dev-${i}`,
        tenantId: TENANT,
        model: models[i % models.length]!,
        state,
        createdAt: at(0),
        updatedAt: at(i % 86_400),
        config: { version: 1, items: [item('network', true, state === 'stalled' ? 'pending' : 'applied'), item('security', true, 'applied')] },
      };
      if (i % 7 !== 0) d.site = `site-${i % 50}`;
      if (i % 3 !== 0) d.profileId = `profile-${i % 20}`;
      if (state !== 'registered' && state !== 'claimed') d.certificateSerial = (i + 1).toString(16);
      if (state === 'provisioned') {
        d.claimedAt = at(i % 1000);
        d.provisionedAt = at((i % 1000) + 1 + (i % 3600));
      }
      if (state === 'stalled') d.stalledAt = at(i % 5000);
      return d;
    };
    const pages = Array.from({ length: N / PAGE }, (_, p) => Array.from({ length: PAGE }, (_, j) => make(p * PAGE + j)));

    const start = performance.now();
    const b = new FleetReportBuilder(TENANT, NOW);
    for (const page of pages) for (const d of page) b.add(d);
    const r = b.build();
    const ms = performance.now() - start;
    console.log(`100,000-device fleet report built in ${ms.toFixed(0)} ms`);

    expect(ms).toBeLessThan(2000);
    expectValidReport(r);
    expect(r.total).toBe(N);
    expect(Object.values(r.byState).reduce((a, n) => a + n, 0)).toBe(N);
    expect(r.timeToProvisioned.count).toBe(r.byState.provisioned);
    expect(r.stalled).toHaveLength(r.byState.stalled!);
    expect(r.stalled.every((s) => s.missing.length === 1 && s.missing[0] === 'network')).toBe(true);
    for (let i = 1; i < r.stalled.length; i++) {
      const [a, c] = [r.stalled[i - 1]!, r.stalled[i]!];
      expect(a.since < c.since || (a.since === c.since && a.deviceId < c.deviceId)).toBe(true);
    }
    expect(r.byProfile).toHaveLength(21);
    expect(r.byProfile[0]!.key).toBe('(none)');
    expect(r.bySite).toHaveLength(51);
    expect(r.byModel.map((g) => g.key)).toEqual(['camera', 'hub', 'lock', 'sensor', 'thermostat']);
  });
});

describe('device CSV', () => {
  it('header lists the columns, CRLF-terminated', () => {
    expect(deviceCsvHeader()).toBe(
      'id,tenantId,model,state,owner,site,profileId,profileVersion,claimedAt,identityIssuedAt,provisionedAt,deadlineAt,stalledAt,certificateSerial,missing\r\n',
    );
    expect(parseCsv(deviceCsvHeader())).toEqual([[...DEVICE_CSV_COLUMNS]]);
  });

  it('a row has one field per column, in column order, empty when unset', () => {
    const full = device('stalled', {
      id: 'dev-1',
      owner: 'Ops',
      site: 'Berlin',
      profileId: 'office',
      profileVersion: 3,
      claimedAt: at(1),
      identityIssuedAt: at(2),
      provisionedAt: at(3),
      deadlineAt: at(4),
      stalledAt: at(5),
      certificateSerial: '0a1b',
      config: { version: 3, items: [item('network', true, 'pending'), item('security', true, 'failed')] },
    });
    const [row] = parseCsv(deviceCsvRow(full));
    expect(row).toHaveLength(DEVICE_CSV_COLUMNS.length);
    const byColumn = Object.fromEntries(DEVICE_CSV_COLUMNS.map((c, i) => [c, row![i]]));
    expect(byColumn).toEqual({
      id: 'dev-1',
      tenantId: TENANT,
      model: 'thermostat',
      state: 'stalled',
      owner: 'Ops',
      site: 'Berlin',
      profileId: 'office',
      profileVersion: '3',
      claimedAt: at(1),
      identityIssuedAt: at(2),
      provisionedAt: at(3),
      deadlineAt: at(4),
      stalledAt: at(5),
      certificateSerial: '0a1b',
      missing: 'network;security',
    });
    // Every column that is a Device property carries that property.
    for (const c of DEVICE_CSV_COLUMNS) if (c !== 'missing') expect(byColumn[c]).toBe(String(full[c as keyof Device]));

    const bare = device('registered', { id: 'dev-2' });
    expect(deviceCsvRow(bare)).toBe(`dev-2,${TENANT},thermostat,registered,,,,,,,,,,,identity\r\n`);
    expect(deviceCsvRow(device('provisioned', { id: 'dev-3' })).endsWith(',ab01,\r\n')).toBe(true);
  });

  it('quotes commas, quotes, CR and LF (RFC 4180), doubling quotes', () => {
    const d = device('registered', { id: 'q', owner: 'Smith, Jones & Co', site: 'The "Annex"\r\nFloor 2' });
    const line = deviceCsvRow(d);
    expect(line).toContain(',"Smith, Jones & Co","The ""Annex""\r\nFloor 2",');
    expect(line.endsWith('\r\n')).toBe(true);
    const rows = parseCsv(deviceCsvHeader() + line + deviceCsvRow(device('claimed', { id: 'next', site: 'lone\nLF' })));
    expect(rows).toHaveLength(3);
    for (const r of rows) expect(r).toHaveLength(DEVICE_CSV_COLUMNS.length);
    expect(rows[1]![4]).toBe('Smith, Jones & Co');
    expect(rows[1]![5]).toBe('The "Annex"\r\nFloor 2');
    expect(rows[2]![5]).toBe('lone\nLF');
  });

  it('defuses formula injection: a leading =, +, -, @, tab or CR gets an apostrophe', () => {
    const cases: [string, string][] = [
      ['=HYPERLINK("http://evil","x")', `"'=HYPERLINK(""http://evil"",""x"")"`],
      ['+1+1', "'+1+1"],
      ['-2+3', "'-2+3"],
      ['@SUM(A1)', "'@SUM(A1)"],
      ['\tcmd', "'\tcmd"],
      ['\r=1', `"'\r=1"`],
      ['=1,2', `"'=1,2"`],
      ['a=1', 'a=1'],
      ['Bob-1', 'Bob-1'],
      [' =x', ' =x'],
    ];
    for (const [owner, field] of cases) {
      const line = deviceCsvRow(device('registered', { id: 'inj', owner }));
      expect(line.startsWith(`inj,${TENANT},thermostat,registered,${field},`), owner).toBe(true);
      const [row] = parseCsv(line);
      expect(row).toHaveLength(DEVICE_CSV_COLUMNS.length);
      expect(row![4]).toBe(FORMULA.test(owner) ? `'${owner}` : owner);
    }
    // Also in the joined missing-items field.
    const d = device('configuring', { id: 'inj2', config: { version: 1, items: [item('=cmd', true, 'pending'), item('b', true, 'pending')] } });
    expect(deviceCsvRow(d).endsWith(",'=cmd;b\r\n")).toBe(true);
  });
});

const FORMULA = /^[=+\-@\t\r]/;
