/**
 * The operator dashboard's use-cases: sign-in sessions (an API key exchanged for a random session id
 * held in memory, so the key never stays in the page) and the tenant overview (funnel, stalled and
 * failed counts, time-to-provisioned histogram), aggregated server-side and cached for a few seconds
 * so that a busy dashboard costs one paged pass over the tenant's devices per TTL, not one per request.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Device, DeviceEvent, DeviceState } from '../../schemas/types.js';
import type { Clock } from '../clock.js';
import { roleAllows } from '../policy/index.js';
import type { CertificateRecord, Store } from '../store/index.js';
import type { ApiKeys } from './api-keys.js';
import type { TenantContext } from './context.js';
import { errorFamily } from '../errors.js';
import { ProvisioningError } from './errors.js';
import { missingItems } from './reports.js';
import { toDeviceView } from './service.js';

// ------------------------------------------------------------------------------------ sessions

export interface DashboardSession {
  /** 256 random bits, base64url: the cookie value. */
  readonly id: string;
  /** Sent back in the X-CSRF-Token header by every state-changing dashboard call. */
  readonly csrfToken: string;
  readonly keyId: string;
  readonly tenantId: string;
  readonly role: TenantContext['role'];
  readonly createdAt: string;
  expiresAt: string;
}

export interface DashboardSessionOptions {
  /** Idle lifetime; each use extends it (default 8 h). */
  ttlSeconds?: number;
  /** Sessions kept at most; the oldest goes first (default 10,000). */
  maxSessions?: number;
}

export const SESSION_COOKIE = 'pd_session';

/** Errors of the dashboard's session layer (its JSON endpoints and the SSE stream it opens). */
export const DashboardError = errorFamily('DashboardError', {
  SESSION_REQUIRED: { status: 401, description: 'Sign in to the dashboard first (the session is missing or has expired).' },
  CSRF_TOKEN_INVALID: { status: 403, description: 'The X-CSRF-Token header is missing or does not match the dashboard session.' },
});
export type DashboardError = InstanceType<typeof DashboardError>;

export class DashboardSessions {
  readonly #sessions = new Map<string, DashboardSession>();
  readonly #ttlMs: number;
  readonly #max: number;

  constructor(
    private readonly apiKeys: ApiKeys,
    private readonly store: Store,
    private readonly clock: Clock,
    opts: DashboardSessionOptions = {},
  ) {
    this.#ttlMs = (opts.ttlSeconds ?? 8 * 3600) * 1000;
    this.#max = opts.maxSessions ?? 10_000;
  }

  /** Verifies the key (AUTH_INVALID) and its role (viewer or higher: report.read) and opens a session. */
  async signIn(apiKey: string): Promise<DashboardSession> {
    const key = await this.apiKeys.verify(apiKey);
    if (!roleAllows(key.role, 'report.read')) throw new ProvisioningError('ROLE_FORBIDDEN', `role ${key.role} may not use the dashboard (viewer or admin keys only)`);
    this.#prune();
    while (this.#sessions.size >= this.#max) this.#sessions.delete(this.#sessions.keys().next().value!);
    const now = this.clock.now();
    const session: DashboardSession = {
      id: randomBytes(32).toString('base64url'),
      csrfToken: randomBytes(32).toString('base64url'),
      keyId: key.id,
      tenantId: key.tenantId,
      role: key.role,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + this.#ttlMs).toISOString(),
    };
    this.#sessions.set(session.id, session);
    return session;
  }

  /** The live session of this cookie value (extended), or undefined. The key must still exist. */
  async get(id: string | undefined): Promise<DashboardSession | undefined> {
    if (!id) return undefined;
    const s = this.#sessions.get(id);
    if (!s) return undefined;
    const now = this.clock.now().getTime();
    if (Date.parse(s.expiresAt) <= now || !(await this.store.getApiKey(s.keyId))) {
      this.#sessions.delete(id);
      return undefined;
    }
    s.expiresAt = new Date(now + this.#ttlMs).toISOString();
    return s;
  }

  signOut(id: string): void {
    this.#sessions.delete(id);
  }

  /** Constant-time check of the CSRF header against the session's token. */
  checkCsrf(session: DashboardSession, presented: string | undefined): boolean {
    if (!presented) return false;
    const a = Buffer.from(presented);
    const b = Buffer.from(session.csrfToken);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  context(session: DashboardSession): TenantContext {
    return { tenantId: session.tenantId, actor: `apikey:${session.keyId}`, role: session.role };
  }

  #prune(): void {
    const now = this.clock.now().getTime();
    for (const [id, s] of this.#sessions) if (Date.parse(s.expiresAt) <= now) this.#sessions.delete(id);
  }
}

// ------------------------------------------------------------------------------------ overview

/** The funnel's stages, in order; a device counts in every stage it has reached. */
export const FUNNEL_STAGES = ['registered', 'claimed', 'identity', 'configuring', 'provisioned'] as const;
export type FunnelStage = (typeof FUNNEL_STAGES)[number];

export interface FunnelStep {
  stage: FunnelStage;
  count: number;
  /** Of the devices in the group (0..100, one decimal). */
  percent: number;
}

export interface FunnelGroup {
  key: string;
  total: number;
  funnel: FunnelStep[];
  stalled: number;
  failed: number;
}

export interface HistogramBucket {
  /** Upper bound in seconds (exclusive); absent for the last, open bucket. */
  lessThanSeconds?: number;
  label: string;
  count: number;
}

export interface DashboardOverview {
  tenantId: string;
  generatedAt: string;
  /** How long the aggregation took (ms) when it was computed. */
  computeMs: number;
  /** For how long the same figures are served again (the cache period). */
  cacheMs: number;
  all: FunnelGroup;
  byProfile: FunnelGroup[];
  bySite: FunnelGroup[];
  timeToProvisioned: { count: number; buckets: HistogramBucket[] };
}

const BUCKETS: readonly [number, string][] = [
  [10, '< 10 s'],
  [30, '10–30 s'],
  [60, '30 s–1 min'],
  [300, '1–5 min'],
  [900, '5–15 min'],
  [3600, '15 min–1 h'],
  [21600, '1–6 h'],
  [86400, '6–24 h'],
];

/** How far along the funnel a device in this state has come (index into FUNNEL_STAGES), or -1 when out of it. */
function stageIndex(device: Device): number {
  const state: DeviceState = device.state;
  switch (state) {
    case 'registered':
      return 0;
    case 'claimed':
      return 1;
    case 'identity_issued':
      return 2;
    case 'configuring':
      return 3;
    case 'provisioned':
      return 4;
    case 'stalled':
    case 'failed':
      // stuck where it is: before identity, or with identity and configuration under way
      return device.certificateSerial ? 3 : 1;
    default:
      return -1; // released, revoked, decommissioned: out of the funnel
  }
}

class GroupCounts {
  total = 0;
  readonly reached = new Uint32Array(FUNNEL_STAGES.length);
  stalled = 0;
  failed = 0;
  add(device: Device, stage: number): void {
    this.total++;
    for (let i = 0; i <= stage; i++) this.reached[i]!++;
    if (device.state === 'stalled') this.stalled++;
    if (device.state === 'failed') this.failed++;
  }
  view(key: string): FunnelGroup {
    const base = this.reached[0]!;
    return {
      key,
      total: this.total,
      funnel: FUNNEL_STAGES.map((stage, i) => ({ stage, count: this.reached[i]!, percent: base === 0 ? 0 : Math.round((this.reached[i]! * 1000) / base) / 10 })),
      stalled: this.stalled,
      failed: this.failed,
    };
  }
}

const NONE = '(none)';
const PAGE = 1000;

export interface StalledEntry {
  deviceId: string;
  model: string;
  site?: string;
  profileId?: string;
  since: string;
  deadlineAt?: string;
  missing: string[];
}

export interface DeviceDetail {
  device: Device;
  missing: string[];
  history: DeviceEvent[];
  certificates: Omit<CertificateRecord, 'pem' | 'keyFingerprint'>[];
}

export class DashboardData {
  readonly #cache = new Map<string, { at: number; value: Promise<DashboardOverview> }>();
  readonly #ttlMs: number;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    opts: { cacheSeconds?: number } = {},
  ) {
    this.#ttlMs = (opts.cacheSeconds ?? 2) * 1000;
  }

  /** The tenant's overview, computed at most once per cache period (concurrent callers share it). */
  overview(ctx: Pick<TenantContext, 'tenantId'>): Promise<DashboardOverview> {
    const now = Date.now(); // wall time: the cache period is about load, not about the domain clock
    const hit = this.#cache.get(ctx.tenantId);
    if (hit && now - hit.at < this.#ttlMs) return hit.value;
    const value = this.#compute(ctx.tenantId);
    this.#cache.set(ctx.tenantId, { at: now, value });
    value.catch(() => this.#cache.delete(ctx.tenantId));
    return value;
  }

  /** Drops the tenant's cached overview (after a change made from the dashboard, so its author sees it at once). */
  invalidate(tenantId: string): void {
    this.#cache.delete(tenantId);
  }

  /** Stalled devices, oldest id order, a page at a time (keyset paging by id). */
  async stalled(ctx: Pick<TenantContext, 'tenantId'>, page: { after?: string; limit: number }): Promise<{ items: StalledEntry[]; next?: string }> {
    const rows = await this.store.listDevices({ tenantId: ctx.tenantId, state: 'stalled', limit: page.limit, ...(page.after ? { after: page.after } : {}) });
    const items = rows.map((r) => {
      const d = toDeviceView(r);
      const e: StalledEntry = { deviceId: d.id, model: d.model, since: d.stalledAt ?? d.updatedAt, missing: missingItems(d) };
      if (d.site !== undefined) e.site = d.site;
      if (d.profileId !== undefined) e.profileId = d.profileId;
      if (d.deadlineAt !== undefined) e.deadlineAt = d.deadlineAt;
      return e;
    });
    return rows.length === page.limit ? { items, next: rows[rows.length - 1]!.id } : { items };
  }

  /** One device with its timeline and certificates (DEVICE_NOT_FOUND for another tenant's). */
  async device(ctx: Pick<TenantContext, 'tenantId'>, id: string): Promise<DeviceDetail> {
    const record = await this.store.getDevice(id);
    if (!record || record.tenantId !== ctx.tenantId) throw new ProvisioningError('DEVICE_NOT_FOUND', `no device ${id}`);
    const device = toDeviceView(record);
    const [history, certs] = await Promise.all([this.store.listEvents(id), this.store.listCertificates(id)]);
    return {
      device,
      missing: missingItems(device),
      history,
      certificates: certs.map(({ pem: _p, keyFingerprint: _k, ...c }) => c),
    };
  }

  async #compute(tenantId: string): Promise<DashboardOverview> {
    const started = performance.now();
    const all = new GroupCounts();
    const byProfile = new Map<string, GroupCounts>();
    const bySite = new Map<string, GroupCounts>();
    const buckets = new Uint32Array(BUCKETS.length + 1);
    let provisioned = 0;
    let after: string | undefined;
    for (;;) {
      const page = await this.store.listDevices({ tenantId, limit: PAGE, ...(after ? { after } : {}) });
      for (const d of page) {
        const stage = stageIndex(d);
        if (stage < 0) continue;
        all.add(d, stage);
        group(byProfile, d.profileId ?? NONE).add(d, stage);
        group(bySite, d.site ?? NONE).add(d, stage);
        if (d.state === 'provisioned' && d.claimedAt && d.provisionedAt) {
          const s = (Date.parse(d.provisionedAt) - Date.parse(d.claimedAt)) / 1000;
          if (Number.isFinite(s) && s >= 0) {
            provisioned++;
            let i = 0;
            while (i < BUCKETS.length && s >= BUCKETS[i]![0]) i++;
            buckets[i]!++;
          }
        }
      }
      if (page.length < PAGE) break;
      after = page[page.length - 1]!.id;
    }
    const sorted = (m: Map<string, GroupCounts>) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, c]) => c.view(k));
    return {
      tenantId,
      generatedAt: this.clock.now().toISOString(),
      computeMs: Math.round(performance.now() - started),
      cacheMs: this.#ttlMs,
      all: all.view('all'),
      byProfile: sorted(byProfile),
      bySite: sorted(bySite),
      timeToProvisioned: {
        count: provisioned,
        buckets: [...BUCKETS.map(([lessThanSeconds, label], i) => ({ lessThanSeconds, label, count: buckets[i]! })), { label: '≥ 24 h', count: buckets[BUCKETS.length]! }],
      },
    };
  }
}

function group(map: Map<string, GroupCounts>, key: string): GroupCounts {
  let c = map.get(key);
  if (!c) map.set(key, (c = new GroupCounts()));
  return c;
}
