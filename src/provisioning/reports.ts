/**
 * Fleet reports: where a tenant's devices stand (GET /v1/reports/fleet) and a per-device CSV export.
 * Pure computations: the caller pages devices out of the store and feeds them in, so a report over
 * 100,000 devices never needs them all in memory at once (only one number per provisioned device,
 * for the percentiles, and one entry per stalled device).
 */
import { ACTIVE_STATES, transitionTable } from '../policy/index.js';
import type { Device, DeviceState, FleetReport, ReportGroup, StalledDevice, StateCounts } from '../../schemas/types.js';

/** Lifecycle order (the state machine's own): the order of keys in every byState object. */
const STATES = Object.keys(transitionTable()) as DeviceState[];
const STATE_INDEX = Object.fromEntries(STATES.map((s, i) => [s, i])) as Record<DeviceState, number>;

/** Devices that count towards provisionedPercent: claimed or further along, and not released, revoked or decommissioned. */
const IN_PROGRESS: ReadonlySet<DeviceState> = new Set<DeviceState>(ACTIVE_STATES);
const PROVISIONED = STATE_INDEX.provisioned;

/** Group key of a device without a profile or site. */
export const NO_KEY = '(none)';

/**
 * Required configuration items that are not 'applied', preceded by 'identity' when the device has no
 * certificate yet (state registered or claimed, or no certificateSerial). [] for a provisioned device.
 */
export function missingItems(device: Device): string[] {
  if (device.state === 'provisioned') return [];
  const missing: string[] = [];
  if (device.state === 'registered' || device.state === 'claimed' || !device.certificateSerial) missing.push('identity');
  for (const item of device.config?.items ?? []) {
    if (item.required && item.status !== 'applied') missing.push(item.id);
  }
  return missing;
}

/** Percentage rounded to 0.1 (half up), 0 for an empty denominator. Integer arithmetic: no 0.1 drift. */
function percent(part: number, whole: number): number {
  return whole === 0 ? 0 : Math.round((part * 1000) / whole) / 10;
}

/** Nearest-rank percentile (p an integer 1..100) of ascending values; values must be non-empty. */
function nearestRank(sorted: Float64Array, p: number): number {
  const rank = Math.max(1, Math.ceil((p * sorted.length) / 100));
  return sorted[rank - 1]!;
}

/** Plain code-unit order: deterministic and locale-independent. */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Timestamps by instant (they may differ in fractional digits or offset), falling back to text. */
function compareTimestamps(a: string, b: string): number {
  const d = Date.parse(a) - Date.parse(b);
  return Number.isNaN(d) || d === 0 ? compareStrings(a, b) : d;
}

class Counts {
  total = 0;
  inProgress = 0;
  readonly byState = new Uint32Array(STATES.length);

  add(state: DeviceState): void {
    this.total++;
    this.byState[STATE_INDEX[state]]!++;
    if (IN_PROGRESS.has(state)) this.inProgress++;
  }

  stateCounts(): StateCounts {
    const out: StateCounts = {};
    for (let i = 0; i < STATES.length; i++) {
      const n = this.byState[i]!;
      if (n > 0) out[STATES[i]!] = n;
    }
    return out;
  }

  provisionedPercent(): number {
    return percent(this.byState[PROVISIONED]!, this.inProgress);
  }
}

function groups(map: ReadonlyMap<string, Counts>): ReportGroup[] {
  return [...map.entries()]
    .sort(([a], [b]) => compareStrings(a, b))
    .map(([key, c]) => ({ key, total: c.total, byState: c.stateCounts(), provisionedPercent: c.provisionedPercent() }));
}

function addTo(map: Map<string, Counts>, key: string, state: DeviceState): void {
  let c = map.get(key);
  if (!c) map.set(key, (c = new Counts()));
  c.add(state);
}

/**
 * Builds a FleetReport (valid per schemas/fleet-report.json) from devices fed one at a time, so
 * that a large fleet can be streamed in pages. build() does not consume the builder: more devices
 * may be added and build() called again.
 */
export class FleetReportBuilder {
  private readonly all = new Counts();
  private readonly byProfile = new Map<string, Counts>();
  private readonly byModel = new Map<string, Counts>();
  private readonly bySite = new Map<string, Counts>();
  private readonly stalled: StalledDevice[] = [];
  /** Claim-to-provisioned durations in milliseconds. */
  private durations = new Float64Array(1024);
  private durationCount = 0;

  constructor(
    private readonly tenantId: string,
    private readonly now: Date,
  ) {}

  /** Throws when the device belongs to another tenant: a report must never mix tenants. */
  add(device: Device): void {
    if (device.tenantId !== this.tenantId) {
      throw new Error(`device ${device.id} belongs to tenant ${device.tenantId}, not ${this.tenantId}`);
    }
    const state = device.state;
    this.all.add(state);
    addTo(this.byProfile, device.profileId ?? NO_KEY, state);
    addTo(this.byModel, device.model, state);
    addTo(this.bySite, device.site ?? NO_KEY, state);

    if (state === 'provisioned' && device.claimedAt && device.provisionedAt) {
      const ms = Date.parse(device.provisionedAt) - Date.parse(device.claimedAt);
      // A provisionedAt before claimedAt belongs to an earlier claim, not the current one.
      if (Number.isFinite(ms) && ms >= 0) this.pushDuration(ms);
    }

    if (state === 'stalled') {
      const entry: StalledDevice = { deviceId: device.id, model: device.model, since: device.stalledAt ?? device.updatedAt, missing: missingItems(device) };
      if (device.site !== undefined) entry.site = device.site;
      if (device.profileId !== undefined) entry.profileId = device.profileId;
      if (device.deadlineAt !== undefined) entry.deadlineAt = device.deadlineAt;
      this.stalled.push(entry);
    }
  }

  build(): FleetReport {
    const sorted = this.durations.slice(0, this.durationCount).sort();
    const timeToProvisioned: FleetReport['timeToProvisioned'] = { count: sorted.length };
    if (sorted.length > 0) {
      timeToProvisioned.p50Seconds = nearestRank(sorted, 50) / 1000;
      timeToProvisioned.p95Seconds = nearestRank(sorted, 95) / 1000;
    }
    const stalled = [...this.stalled]
      .sort((a, b) => compareTimestamps(a.since, b.since) || compareStrings(a.deviceId, b.deviceId))
      .map((s) => ({ ...s, missing: [...s.missing] }));
    return {
      tenantId: this.tenantId,
      generatedAt: this.now.toISOString(),
      total: this.all.total,
      byState: this.all.stateCounts(),
      provisionedPercent: this.all.provisionedPercent(),
      timeToProvisioned,
      byProfile: groups(this.byProfile),
      byModel: groups(this.byModel),
      bySite: groups(this.bySite),
      stalled,
    };
  }

  private pushDuration(ms: number): void {
    if (this.durationCount === this.durations.length) {
      const grown = new Float64Array(this.durations.length * 2);
      grown.set(this.durations);
      this.durations = grown;
    }
    this.durations[this.durationCount++] = ms;
  }
}

// ---------------------------------------------------------------------------------------------
// CSV export

export const DEVICE_CSV_COLUMNS: readonly string[] = Object.freeze([
  'id',
  'tenantId',
  'model',
  'state',
  'owner',
  'site',
  'profileId',
  'profileVersion',
  'claimedAt',
  'identityIssuedAt',
  'provisionedAt',
  'deadlineAt',
  'stalledAt',
  'certificateSerial',
  'missing',
]);

/** Leading characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection). */
const FORMULA_START = /^[=+\-@\t\r]/;
const NEEDS_QUOTES = /[",\r\n]/;

/** One CSV field: defused against formula injection, then quoted per RFC 4180 when needed. */
function csvField(value: string | number | undefined): string {
  if (value === undefined) return '';
  let s = String(value);
  if (FORMULA_START.test(s)) s = `'${s}`;
  return NEEDS_QUOTES.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function csvLine(fields: readonly (string | number | undefined)[]): string {
  return fields.map(csvField).join(',') + '\r\n';
}

/** The header line, CRLF-terminated: header + rows concatenate into an RFC 4180 document. */
export function deviceCsvHeader(): string {
  return csvLine(DEVICE_CSV_COLUMNS);
}

/** One device as a CSV line in DEVICE_CSV_COLUMNS order, CRLF-terminated; missing items joined with ';'. */
export function deviceCsvRow(device: Device): string {
  return csvLine([
    device.id,
    device.tenantId,
    device.model,
    device.state,
    device.owner,
    device.site,
    device.profileId,
    device.profileVersion,
    device.claimedAt,
    device.identityIssuedAt,
    device.provisionedAt,
    device.deadlineAt,
    device.stalledAt,
    device.certificateSerial,
    missingItems(device).join(';'),
  ]);
}
