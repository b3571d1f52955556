/**
 * The operator's remote commands: talk to a running provisiond over its HTTP API only (the same
 * calls a script would make), with an API key that is sent as a Bearer token and never printed.
 *
 * Errors: an API error answer becomes a RemoteError with the API's code and message (exit 1); a
 * service that cannot be reached is UNREACHABLE (exit 1).
 */
import { writeFile } from 'node:fs/promises';
import type { DeviceImportResult, FleetReport, LabelsRequest } from '../../schemas/types.js';
import { parseCsv } from '../api/csv.js';

/** Client-side settings: read by the CLI only, never by the service's configuration. */
export const URL_ENV = 'PROVISIOND_URL';
export const KEY_ENV = 'PROVISIOND_API_KEY';

/** Lifecycle order, for tables. */
export const DEVICE_STATES = [
  'registered',
  'claimed',
  'identity_issued',
  'configuring',
  'provisioned',
  'stalled',
  'failed',
  'released',
  'revoked',
  'decommissioned',
] as const;

/** An error answer of the API (code and message as the API sent them), or UNREACHABLE. */
export class RemoteError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface Target {
  url: string;
  key: string;
}

export class ApiClient {
  readonly #base: string;
  readonly #key: string;

  constructor(target: Target) {
    this.#base = target.url.replace(/\/+$/, '');
    this.#key = target.key;
  }

  /** A request; resolves with the response when its status is 2xx or in `accept`, otherwise rejects with RemoteError. */
  async request(method: string, path: string, opts: { body?: string | Buffer; type?: string; accept?: number[]; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.#base}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.#key}`, ...(opts.type ? { 'content-type': opts.type } : {}), ...opts.headers },
        ...(opts.body !== undefined ? { body: opts.body } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new RemoteError('UNREACHABLE', `cannot reach ${this.#base}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
    if (res.ok || opts.accept?.includes(res.status)) return res;
    const text = await res.text();
    let body: { code?: unknown; message?: unknown } | undefined;
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      body = undefined;
    }
    const code = typeof body?.code === 'string' ? body.code : `HTTP_${res.status}`;
    const message = typeof body?.message === 'string' ? body.message : text.slice(0, 200) || res.statusText;
    throw new RemoteError(code, message, res.status);
  }

  async json<T>(method: string, path: string, opts: Parameters<ApiClient['request']>[2] = {}): Promise<T> {
    const res = await this.request(method, path, opts);
    return (await res.json()) as T;
  }
}

/** Writes `text` to `out` (mode 0600: it may hold claim codes), or to stdout without one. */
async function emit(text: string, out: string | undefined): Promise<void> {
  if (out === undefined) process.stdout.write(text);
  else await writeFile(out, text, { mode: 0o600 });
}

function csvField(v: unknown): string {
  const s = v === undefined || v === null ? '' : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Left-aligned columns, two spaces apart. */
export function table(header: string[], rows: (string | number)[][]): string {
  const all = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

export interface ImportOptions {
  mode: 'atomic' | 'partial';
  out?: string;
  json: boolean;
}

/**
 * POST /v1/devices/import with a CSV (header id,model[,claimCode]) or JSON ({devices: [...]}) file.
 * Prints every row (with the generated claim codes, shown this once) as CSV to stdout or --out, a
 * summary on stderr. Exit 0 when no row failed.
 */
export async function importDevices(api: ApiClient, file: string, body: string, opts: ImportOptions): Promise<number> {
  const isJson = file.toLowerCase().endsWith('.json');
  const res = await api.request('POST', `/v1/devices/import?mode=${opts.mode}`, { body, type: isJson ? 'application/json' : 'text/csv', accept: [422] });
  const result = (await res.json()) as DeviceImportResult;
  if (opts.json) {
    await emit(JSON.stringify(result, null, 2) + '\n', opts.out);
  } else {
    const lines = ['row,id,status,claimCode,code,message'];
    for (const r of result.rows) lines.push([r.row, r.id, r.status, r.claimCode, r.code, r.message].map(csvField).join(','));
    await emit(lines.join('\n') + '\n', opts.out);
  }
  const where = opts.out ? `; rows written to ${opts.out}` : '';
  process.stderr.write(
    `devices import: ${result.total} rows: created ${result.created}, unchanged ${result.unchanged}, failed ${result.failed}` +
      ` (mode ${result.mode}${result.imported ? '' : ', nothing imported'})${where}\n`,
  );
  return result.failed === 0 && result.imported ? 0 : 1;
}

export interface LabelOptions {
  out: string;
  format: LabelsRequest['format'];
  title?: string;
}

/**
 * Labels from a CSV with the columns id (or deviceId) and claimCode (and model): the --out file of
 * `devices import` fits. Rows without a claim code are skipped.
 */
export function labelInputs(csv: string): LabelsRequest['labels'] {
  const [header, ...rows] = parseCsv(csv);
  if (!header) throw new RemoteError('INVALID_CSV', 'the labels file is empty: a header line is needed');
  const col = (...names: string[]) => header.findIndex((h) => names.includes(h.trim()));
  const id = col('id', 'deviceId');
  const code = col('claimCode');
  const model = col('model');
  if (id < 0 || code < 0) throw new RemoteError('INVALID_CSV', 'the labels file needs the columns id (or deviceId) and claimCode');
  const labels: LabelsRequest['labels'] = [];
  for (const row of rows) {
    const claimCode = row[code]?.trim();
    const deviceId = row[id]?.trim();
    if (!claimCode || !deviceId) continue;
    const m = model >= 0 ? row[model]?.trim() : undefined;
    labels.push({ deviceId, claimCode, ...(m ? { model: m } : {}) });
  }
  if (labels.length === 0) throw new RemoteError('INVALID_CSV', 'the labels file has no row with both a device id and a claim code');
  return labels;
}

/** POST /v1/labels; writes the sheet (html) or the one label (svg, png) to `out`. */
export async function writeLabels(api: ApiClient, labels: LabelsRequest['labels'], opts: LabelOptions): Promise<void> {
  const request: LabelsRequest = { format: opts.format, labels, ...(opts.title ? { title: opts.title } : {}) };
  const res = await api.request('POST', '/v1/labels', { body: JSON.stringify(request), type: 'application/json' });
  const bytes = Buffer.from(await res.arrayBuffer());
  await writeFile(opts.out, bytes);
  process.stderr.write(`labels: ${labels.length} label${labels.length === 1 ? '' : 's'} written to ${opts.out} (${opts.format}, ${bytes.length} bytes)\n`);
}

/** GET /v1/reports/fleet as text: states, then per profile, model and site. */
export function formatFunnel(report: FleetReport): string {
  const states = DEVICE_STATES.filter((s) => (report.byState[s] ?? 0) > 0);
  let text = `tenant ${report.tenantId}, ${report.total} devices, ${report.provisionedPercent.toFixed(1)}% provisioned (at ${report.generatedAt})\n\n`;
  text += table(
    ['state', 'devices'],
    DEVICE_STATES.map((s) => [s, report.byState[s] ?? 0]),
  );
  const t = report.timeToProvisioned;
  if (t.count > 0) text += `\ntime to provisioned: p50 ${t.p50Seconds?.toFixed(1) ?? '-'} s, p95 ${t.p95Seconds?.toFixed(1) ?? '-'} s over ${t.count} devices\n`;
  for (const [title, groups] of [
    ['profile', report.byProfile],
    ['model', report.byModel],
    ['site', report.bySite],
  ] as const) {
    if (groups.length === 0) continue;
    text += '\n' + table([title, 'total', 'provisioned%', ...states], groups.map((g) => [g.key, g.total, g.provisionedPercent.toFixed(1), ...states.map((s) => g.byState[s] ?? 0)]));
  }
  if (report.stalled.length > 0) {
    text += `\nstalled (${report.stalled.length}):\n` + table(['device', 'model', 'since', 'missing'], report.stalled.map((d) => [d.deviceId, d.model, d.since, JSON.stringify(d.missing)]));
  }
  return text;
}

interface DeviceRow {
  id: string;
  model: string;
  state: string;
  profileId?: string;
  site?: string;
  updatedAt: string;
  [k: string]: unknown;
}

/** GET /v1/devices, following `next` until `limit` devices (0: all). */
export async function listDevices(api: ApiClient, opts: { state?: string; profile?: string; limit: number }): Promise<DeviceRow[]> {
  const items: DeviceRow[] = [];
  let after: string | undefined;
  for (;;) {
    const want = opts.limit === 0 ? 1000 : Math.min(1000, opts.limit - items.length);
    const q = new URLSearchParams({ limit: String(want) });
    if (opts.state) q.set('state', opts.state);
    if (opts.profile) q.set('profileId', opts.profile);
    if (after) q.set('after', after);
    const page = await api.json<{ items: DeviceRow[]; next?: string }>('GET', `/v1/devices?${q}`);
    items.push(...page.items);
    if (!page.next || (opts.limit !== 0 && items.length >= opts.limit)) return items;
    after = page.next;
  }
}

export function formatDeviceList(items: DeviceRow[]): string {
  return table(['id', 'model', 'state', 'profile', 'site', 'updated'], items.map((d) => [d.id, d.model, d.state, d.profileId ?? '', d.site ?? '', d.updatedAt]));
}

/** One device as `field  value` lines (objects as JSON). */
export function formatDevice(device: Record<string, unknown>): string {
  return table(
    ['field', 'value'],
    Object.entries(device).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)]),
  );
}

export interface ServiceEventLine {
  id: string;
  type: string;
  at: string;
  deviceId?: string;
  data?: Record<string, unknown>;
}

/**
 * Tails GET /v1/events: calls `onEvent` for each event until the stream ends (resolves) or
 * `signal` aborts (resolves). Comments (heartbeats) are skipped.
 */
export async function tailEvents(api: ApiClient, onEvent: (e: ServiceEventLine) => void, opts: { signal: AbortSignal; lastEventId?: string }): Promise<'ended' | 'stopped'> {
  let res: Response;
  try {
    res = await api.request('GET', '/v1/events', {
      headers: { accept: 'text/event-stream', ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}) },
      signal: opts.signal,
    });
  } catch (err) {
    if (opts.signal.aborted) return 'stopped';
    throw err;
  }
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
        const data = block
          .split(/\r?\n/)
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, ''))
          .join('\n');
        if (data === '') continue;
        try {
          onEvent(JSON.parse(data) as ServiceEventLine);
        } catch {
          // not an event of ours; skip it
        }
      }
    }
  } catch (err) {
    if (opts.signal.aborted) return 'stopped';
    throw new RemoteError('UNREACHABLE', `the event stream broke: ${(err as Error).message}`);
  }
  return opts.signal.aborted ? 'stopped' : 'ended';
}

export function formatEvent(e: ServiceEventLine): string {
  const data = e.data && Object.keys(e.data).length > 0 ? ` ${JSON.stringify(e.data)}` : '';
  return `${e.at} ${e.type}${e.deviceId ? ` ${e.deviceId}` : ''}${data}`;
}
