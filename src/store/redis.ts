/**
 * The Redis backend of the Store (ioredis): one server, a Sentinel-monitored master, or a Cluster
 * (redis-connection.ts; in a Cluster every key of the deployment lives in one hash slot).
 *
 * Records are stored as the same JSON strings as in SQLite. Every operation that must not race
 * (inserts with uniqueness checks, compare-and-set device updates with their extras, the issuance
 * commit, profile versions, tenants, API keys) is ONE Lua script (src/store/redis-scripts.ts):
 * Redis runs a script without interleaving any other command, and each script checks everything
 * first and only then writes, so a failure writes nothing. Scripts report a failed check as a
 * code, mapped here to the same StoreErrors as the SQLite backend.
 *
 * Reads that combine several keys (listings) run as read-only scripts too, so each returns a
 * consistent view; listDevices pages over the id index and filters in Node, chunk by chunk.
 *
 * Errors: the documented conditions throw coded StoreErrors; connection errors, timeouts and
 * anything unexpected from Redis become STORE_UNAVAILABLE. A write whose parts contradict each
 * other is a caller bug: it throws a plain Error before Redis is touched.
 */
import { clusterSafePrefix, createRedisClient, describeRedis, type RedisClient, type RedisSettings } from './redis-connection.js';
import { StoreError } from './errors.js';
import { ArgumentChecks } from './arguments.js';
import * as scripts from './redis-scripts.js';
import type {
  ApiKeyRecord,
  AuditPage,
  AuditQuery,
  BootstrapTokenRecord,
  CertificateRecord,
  ConfigDocumentRecord,
  DeviceQuery,
  DeviceRecord,
  DeviceUpdateExtras,
  IssuanceCommit,
  ProfileRecord,
  Store,
  StoreCounts,
  StoreEntry,
  TenantRecord,
} from './types.js';
import type { AuditEntry, Device, DeviceEvent } from '../../schemas/types.js';

type DeviceState = Device['state'];
type StoreErrorCode = keyof typeof StoreError.codes;
type Arg = string | number;

const CONNECT_TIMEOUT_MS = 3000;
const COMMAND_TIMEOUT_MS = 5000;
/** Devices per page of exportEntries and countEntries; keys per SCAN step of both. */
const EXPORT_PAGE = 500;
const SCAN_COUNT = 1000;

const SCRIPT_NAMES = {
  insertDevices: scripts.INSERT_DEVICES,
  updateDevice: scripts.UPDATE_DEVICE,
  commitIssuance: scripts.COMMIT_ISSUANCE,
  insertToken: scripts.INSERT_TOKEN,
  insertProfileVersion: scripts.INSERT_PROFILE_VERSION,
  insertTenant: scripts.INSERT_TENANT,
  updateTenant: scripts.UPDATE_TENANT,
  insertApiKey: scripts.INSERT_API_KEY,
  deleteApiKey: scripts.DELETE_API_KEY,
  appendAudit: scripts.APPEND_AUDIT,
  devicePage: scripts.DEVICE_PAGE,
  getListed: scripts.GET_LISTED,
  latestProfiles: scripts.LATEST_PROFILES,
  tenantApiKeys: scripts.TENANT_API_KEYS,
  exportScan: scripts.EXPORT_SCAN,
  exportDevices: scripts.EXPORT_DEVICES,
  countDevices: scripts.COUNT_DEVICES,
  importEntries: scripts.IMPORT_ENTRIES,
  dueDevices: scripts.DUE_DEVICES,
  buildDueIndex: scripts.BUILD_DUE_INDEX,
  deleteExpiredTokens: scripts.DELETE_EXPIRED_TOKENS,
  buildTokenIndex: scripts.BUILD_TOKEN_INDEX,
} as const;
type ScriptName = keyof typeof SCRIPT_NAMES;

const STORE_CODES = new Set(Object.keys(StoreError.codes));

/** UTF-8 byte order, as SQLite's BINARY collation and Redis ZRANGEBYLEX (never locale-aware). */
function cmp(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}




function auditArgs(entries: readonly AuditEntry[] | undefined): Arg[] {
  return [entries?.length ?? 0, ...(entries ?? []).map((e) => JSON.stringify(e))];
}

/** A stream id as XADD makes them ('<ms>-<seq>'), the audit cursor. */
const STREAM_ID = /^[0-9]{1,20}-[0-9]{1,20}$/;

function auditMatches(e: AuditEntry, q: AuditQuery): boolean {
  if (q.tenantId !== undefined && e.tenantId !== q.tenantId) return false;
  if (q.deviceId !== undefined && e.deviceId !== q.deviceId) return false;
  if (q.action !== undefined && e.action !== q.action) return false;
  if (q.outcome !== undefined && e.outcome !== q.outcome) return false;
  if (q.since !== undefined && cmp(e.at, q.since) < 0) return false;
  if (q.until !== undefined && cmp(e.at, q.until) >= 0) return false;
  return true;
}

function eventArgs(events: readonly DeviceEvent[]): Arg[] {
  const out: Arg[] = [events.length];
  for (const e of events) out.push(e.deviceId, JSON.stringify(e));
  return out;
}

/** The device fields the scripts index, then the record, stored with `revision`. */
function deviceArgs(device: DeviceRecord, revision: number): { record: string; args: Arg[] } {
  const stored: DeviceRecord = { ...device, revision };
  const record = JSON.stringify(stored);
  return { record, args: [stored.claimCodeHash, stored.tenantId, stored.state, record] };
}

function parse<T>(json: string | null | undefined): T | undefined {
  return json === null || json === undefined || json === '' ? undefined : (JSON.parse(json) as T);
}

function parseAll<T>(list: unknown): T[] {
  return (list as string[]).filter((s) => s !== '').map((s) => JSON.parse(s) as T);
}

function unavailable(op: string, err: unknown): never {
  if (err instanceof StoreError) throw err;
  const detail = err instanceof Error ? err.message : String(err);
  throw new StoreError('STORE_UNAVAILABLE', `Redis store: ${op} failed: ${detail}`, { cause: err });
}

/** Newest first: issuedAt descending, then insertion order descending (as SQLite's rowid). */
function newestFirst(certs: CertificateRecord[]): CertificateRecord[] {
  return certs
    .map((c, i) => ({ c, i }))
    .sort((a, b) => cmp(b.c.issuedAt, a.c.issuedAt) || b.i - a.i)
    .map(({ c }) => c);
}

function matches(d: DeviceRecord, q: DeviceQuery): boolean {
  if (q.tenantId !== undefined && d.tenantId !== q.tenantId) return false;
  if (q.state !== undefined && d.state !== q.state) return false;
  if (q.states !== undefined && !q.states.includes(d.state)) return false;
  if (q.profileId !== undefined && d.profileId !== q.profileId) return false;
  if (q.deadlineBefore !== undefined && !(d.deadlineAt !== undefined && cmp(d.deadlineAt, q.deadlineBefore) < 0)) return false;
  if (
    q.provisionalBefore !== undefined &&
    !(d.provisionalUntil !== undefined && cmp(d.provisionalUntil, q.provisionalBefore) < 0)
  ) {
    return false;
  }
  return true;
}

const checks = new ArgumentChecks('RedisStore');

export class RedisStore implements Store {
  readonly settings: RedisSettings;
  /** The configured prefix; in Cluster mode wrapped in a hash tag (redis-connection.ts). */
  readonly prefix: string;
  private redis: RedisClient | undefined;

  /** `url` alone: one Redis server. Sentinel and Cluster: see RedisSettings. */
  constructor(opts: RedisSettings & { prefix?: string }) {
    const { prefix, ...settings } = opts;
    this.settings = settings;
    this.prefix = clusterSafePrefix(settings, prefix ?? 'provisiond:');
  }

  async start(): Promise<void> {
    if (this.redis !== undefined) return;
    let connected = false;
    const redis = createRedisClient(this.settings, {
      lazyConnect: true,
      connectTimeout: CONNECT_TIMEOUT_MS,
      commandTimeout: COMMAND_TIMEOUT_MS,
      maxRetriesPerRequest: 1,
      // While Redis is away, a command fails at once (503 STORE_UNAVAILABLE, Retry-After) instead
      // of holding the request until the next reconnect attempt.
      enableOfflineQueue: false,
      // No retries while start() connects (it must fail fast); after that, reconnect with backoff.
      retryStrategy: (times) => (connected ? Math.min(times * 200, 2000) : null),
    });
    // Connection errors surface through the commands; never as an unhandled 'error' event.
    redis.on('error', () => {});
    // One declared key (the meta hash) routes each script to the node holding the deployment's
    // slot in Cluster mode; every other key a script touches carries the same prefix.
    for (const [name, lua] of Object.entries(SCRIPT_NAMES)) redis.defineCommand(name, { numberOfKeys: 1, lua });
    try {
      await redis.connect();
      await redis.ping();
      connected = true;
      this.redis = redis;
      await this.buildDueIndex();
      await this.buildTokenIndex();
    } catch (err) {
      this.redis = undefined;
      redis.disconnect();
      unavailable(`start (${describeRedis(this.settings)})`, err);
    }
  }

  async stop(): Promise<void> {
    const redis = this.redis;
    this.redis = undefined;
    if (redis === undefined) return;
    try {
      await redis.quit();
    } catch {
      redis.disconnect();
    }
  }

  async ping(): Promise<void> {
    const r = this.client('ping');
    await this.call('ping', () => r.ping());
  }

  async insertDevice(device: DeviceRecord, events: DeviceEvent[]): Promise<void> {
    checks.deviceWrite(device, events);
    await this.insert('insertDevice', [device], events, false);
  }

  async insertDevices(devices: readonly DeviceRecord[], events: DeviceEvent[]): Promise<void> {
    const ids = new Set<string>();
    for (const device of devices) {
      checks.deviceWrite(device, events.filter((e) => e.deviceId === device.id));
      if (ids.has(device.id)) throw new Error(`insertDevices: device ${device.id} appears twice`);
      ids.add(device.id);
    }
    if (events.some((e) => !ids.has(e.deviceId))) throw new Error('insertDevices: an event names a device that is not inserted');
    if (devices.length === 0 && events.length === 0) {
      this.client('insertDevices');
      return;
    }
    await this.insert('insertDevices', devices, events, true);
  }

  private async insert(op: string, devices: readonly DeviceRecord[], events: DeviceEvent[], withId: boolean): Promise<void> {
    const args: Arg[] = [devices.length];
    for (const d of devices) {
      const { record } = deviceArgs(d, d.revision);
      args.push(d.id, d.claimCodeHash, d.tenantId, d.state, String(d.revision), record);
    }
    args.push(...eventArgs(events));
    const res = await this.run(op, 'insertDevices', args);
    this.check(res, (code, id) => {
      if (!withId) return new StoreError(code);
      const msg = code === 'DEVICE_EXISTS' ? `device ${id} exists` : `the claim code of ${id} is in use`;
      return new StoreError(code, msg, { details: { id } });
    });
  }

  async getDevice(id: string): Promise<DeviceRecord | undefined> {
    const r = this.client('getDevice');
    return parse<DeviceRecord>(await this.call('getDevice', () => r.hget(this.k('dev:', id), 'record')));
  }

  async findDeviceByClaimCodeHash(hash: string): Promise<DeviceRecord | undefined> {
    const r = this.client('findDeviceByClaimCodeHash');
    // One read would do under a script, but two reads are safe: a hash maps to a device whose
    // record holds that hash (checked below), or to nothing.
    const id = await this.call('findDeviceByClaimCodeHash', () => r.hget(this.k('cch'), hash));
    if (id === null) return undefined;
    const device = await this.getDevice(id);
    return device?.claimCodeHash === hash ? device : undefined;
  }

  async listDevices(query: DeviceQuery): Promise<DeviceRecord[]> {
    this.client('listDevices');
    const limit = Math.floor(query.limit);
    if (!(limit > 0)) return [];
    const states = query.states ?? (query.state !== undefined ? [query.state] : undefined);
    if (query.deadlineBefore !== undefined && states !== undefined) {
      // the stall scan's question: from the due index, not by reading every device
      const flat = (await this.run('listDevices', 'dueDevices', [query.deadlineBefore, states.length, ...states])) as string[];
      return parseAll<DeviceRecord>(flat)
        .filter((d) => matches(d, query) && (query.after === undefined || cmp(d.id, query.after) > 0))
        .sort((a, b) => cmp(a.id, b.id))
        .slice(0, limit);
    }
    const index = query.tenantId === undefined ? this.k('devids') : this.k('tdevids:', query.tenantId);
    const filtered =
      query.state !== undefined ||
      query.states !== undefined ||
      query.profileId !== undefined ||
      query.deadlineBefore !== undefined ||
      query.provisionalBefore !== undefined;
    const chunk = filtered ? Math.max(limit, 200) : limit;
    const out: DeviceRecord[] = [];
    let start = query.after === undefined ? '-' : `(${query.after}`;
    for (;;) {
      const flat = (await this.run('listDevices', 'devicePage', [index, start, chunk])) as string[];
      for (let i = 0; i < flat.length; i += 2) {
        const record = flat[i + 1];
        if (record === undefined || record === '') continue;
        const device = JSON.parse(record) as DeviceRecord;
        if (matches(device, query)) {
          out.push(device);
          if (out.length >= limit) return out;
        }
      }
      if (flat.length < 2 * chunk) return out;
      start = `(${flat[flat.length - 2]!}`;
    }
  }

  async countDevicesByState(tenantId?: string): Promise<Partial<Record<DeviceState, number>>> {
    const r = this.client('countDevicesByState');
    const key = tenantId === undefined ? this.k('counts') : this.k('tcounts:', tenantId);
    const raw = await this.call('countDevicesByState', () => r.hgetall(key));
    const counts: Partial<Record<DeviceState, number>> = {};
    for (const [state, n] of Object.entries(raw)) {
      const v = Number(n);
      if (v > 0) counts[state as DeviceState] = v;
    }
    return counts;
  }

  async updateDevice(
    device: DeviceRecord,
    expectedRevision: number,
    events: DeviceEvent[],
    extras: DeviceUpdateExtras = {},
  ): Promise<DeviceRecord> {
    checks.updateDevice(device, events, extras);
    const { record, args: dev } = deviceArgs(device, expectedRevision + 1);
    const changes = extras.certificates ?? [];
    const args: Arg[] = [device.id, String(expectedRevision), String(expectedRevision + 1), ...dev, changes.length];
    for (const c of changes) {
      args.push(
        c.serial,
        c.status,
        c.revokedAt === undefined ? '0' : '1',
        c.revokedAt ?? '',
        c.revocationReason === undefined ? '0' : '1',
        c.revocationReason ?? '',
      );
    }
    args.push(...this.configArgs(extras.configDocument), ...eventArgs(events), ...auditArgs(extras.audit));
    const res = await this.run('updateDevice', 'updateDevice', args);
    this.check(res, (code, serial) =>
      code === 'CERTIFICATE_NOT_FOUND'
        ? new StoreError(code, `no certificate ${serial ?? ''} of device ${device.id}`)
        : new StoreError(code),
    );
    return JSON.parse(record) as DeviceRecord;
  }

  async listEvents(deviceId: string): Promise<DeviceEvent[]> {
    const r = this.client('listEvents');
    const list = await this.call('listEvents', () => r.lrange(this.k('ev:', deviceId), 0, -1));
    return list.map((s) => JSON.parse(s) as DeviceEvent);
  }

  async insertBootstrapToken(token: BootstrapTokenRecord): Promise<void> {
    checks.requireString(token.jti, 'token.jti');
    checks.requireString(token.deviceId, 'token.deviceId');
    const res = await this.run('insertBootstrapToken', 'insertToken', [token.jti, token.deviceId, JSON.stringify(token)]);
    this.check(res);
  }

  async getBootstrapToken(jti: string): Promise<BootstrapTokenRecord | undefined> {
    const r = this.client('getBootstrapToken');
    return parse<BootstrapTokenRecord>(await this.call('getBootstrapToken', () => r.get(this.k('tok:', jti))));
  }

  async deleteExpiredBootstrapTokens(before: string, limit: number): Promise<BootstrapTokenRecord[]> {
    const n = Math.floor(limit);
    if (!(n > 0)) return [];
    const removed = parseAll<BootstrapTokenRecord>(await this.run('deleteExpiredBootstrapTokens', 'deleteExpiredTokens', [before, n]));
    return removed.sort((a, b) => cmp(a.expiresAt, b.expiresAt) || cmp(a.jti, b.jti));
  }

  async commitIssuance(commit: IssuanceCommit): Promise<DeviceRecord> {
    const { device, certificate, configDocument, consumeToken, expectedRevision } = commit;
    checks.commitIssuance(commit);
    const previous = commit.previousCertificates;
    // The new certificate is stored active, whatever the caller set (and so without revocation fields).
    const { revokedAt: _revokedAt, revocationReason: _reason, ...fresh } = certificate;
    const certJson = JSON.stringify({ ...fresh, status: 'active' });
    const { record, args: dev } = deviceArgs(device, expectedRevision + 1);
    const args: Arg[] = [
      device.id,
      String(expectedRevision),
      String(expectedRevision + 1),
      ...dev,
      consumeToken === undefined ? '0' : '1',
      consumeToken?.jti ?? '',
      consumeToken?.consumedAt ?? '',
      certificate.serial,
      certificate.keyFingerprint,
      certJson,
      ...this.configArgs(configDocument),
      previous?.status === 'revoked' ? 'revoked' : 'superseded',
      previous?.status === 'revoked' ? previous.revokedAt : '',
      previous?.status === 'revoked' ? previous.revocationReason : '',
      ...eventArgs(commit.events),
      ...auditArgs(commit.audit),
    ];
    const res = await this.run('commitIssuance', 'commitIssuance', args);
    this.check(res);
    return JSON.parse(record) as DeviceRecord;
  }

  async getCertificate(serial: string): Promise<CertificateRecord | undefined> {
    const r = this.client('getCertificate');
    return parse<CertificateRecord>(await this.call('getCertificate', () => r.get(this.k('cert:', serial))));
  }

  async listCertificates(deviceId: string): Promise<CertificateRecord[]> {
    const list = await this.run('listCertificates', 'getListed', [this.k('dcerts:', deviceId), 'list', this.k('cert:')]);
    return newestFirst(parseAll<CertificateRecord>(list));
  }

  async findCertificateByKey(keyFingerprint: string): Promise<CertificateRecord | undefined> {
    const list = await this.run('findCertificateByKey', 'getListed', [
      this.k('kcerts:', keyFingerprint),
      'list',
      this.k('cert:'),
    ]);
    return newestFirst(parseAll<CertificateRecord>(list))[0];
  }

  async listRevokedCertificates(notAfterAfter: string): Promise<CertificateRecord[]> {
    const list = await this.run('listRevokedCertificates', 'getListed', [this.k('revoked'), 'set', this.k('cert:')]);
    return parseAll<CertificateRecord>(list)
      .filter((c) => c.status === 'revoked' && cmp(c.notAfter, notAfterAfter) > 0)
      .sort((a, b) => {
        // SQLite: ORDER BY revoked_at, serial (a missing revokedAt, NULL, sorts first).
        if (a.revokedAt !== b.revokedAt) {
          if (a.revokedAt === undefined) return -1;
          if (b.revokedAt === undefined) return 1;
          return cmp(a.revokedAt, b.revokedAt);
        }
        return cmp(a.serial, b.serial);
      });
  }

  async getConfigDocument(deviceId: string, version: number): Promise<ConfigDocumentRecord | undefined> {
    const r = this.client('getConfigDocument');
    return parse<ConfigDocumentRecord>(
      await this.call('getConfigDocument', () => r.hget(this.k('cfg:', deviceId), String(version))),
    );
  }

  async insertTenant(tenant: TenantRecord): Promise<void> {
    checks.requireString(tenant.id, 'tenant.id');
    this.check(await this.run('insertTenant', 'insertTenant', [tenant.id, JSON.stringify(tenant)]));
  }

  async getTenant(id: string): Promise<TenantRecord | undefined> {
    const r = this.client('getTenant');
    return parse<TenantRecord>(await this.call('getTenant', () => r.hget(this.k('tenants'), id)));
  }

  async updateTenant(tenant: TenantRecord): Promise<void> {
    this.check(await this.run('updateTenant', 'updateTenant', [String(tenant.id), JSON.stringify(tenant)]));
  }

  async listTenants(): Promise<TenantRecord[]> {
    const r = this.client('listTenants');
    const all = await this.call('listTenants', () => r.hgetall(this.k('tenants')));
    return Object.keys(all)
      .sort(cmp)
      .map((id) => JSON.parse(all[id]!) as TenantRecord);
  }

  async insertProfileVersion(profile: ProfileRecord): Promise<void> {
    checks.profileVersion(profile);
    const res = await this.run('insertProfileVersion', 'insertProfileVersion', [
      profile.tenantId,
      profile.id,
      String(profile.version),
      JSON.stringify(profile),
    ]);
    this.check(res, (code) =>
      code === 'PROFILE_VERSION_GAP'
        ? new StoreError(code, `profile ${profile.id} has no version ${profile.version - 1}`)
        : new StoreError(code),
    );
  }

  async getProfile(tenantId: string, id: string, version?: number): Promise<ProfileRecord | undefined> {
    const r = this.client('getProfile');
    const key = this.profileKey(tenantId, id);
    return this.call('getProfile', async () => {
      let v = version === undefined ? undefined : String(version);
      if (v === undefined) {
        const latest = await r.hget(this.k('profids:', tenantId), id);
        if (latest === null) return undefined;
        v = latest;
      }
      return parse<ProfileRecord>(await r.hget(key, v));
    });
  }

  async listProfiles(tenantId: string): Promise<ProfileRecord[]> {
    const list = await this.run('listProfiles', 'latestProfiles', [tenantId]);
    return parseAll<ProfileRecord>(list).sort((a, b) => cmp(a.id, b.id));
  }

  async insertApiKey(key: ApiKeyRecord, audit: readonly AuditEntry[] = []): Promise<void> {
    checks.requireString(key.id, 'apiKey.id');
    checks.requireString(key.tenantId, 'apiKey.tenantId');
    checks.audit(audit);
    this.check(await this.run('insertApiKey', 'insertApiKey', [key.id, key.tenantId, JSON.stringify(key), ...auditArgs(audit)]));
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | undefined> {
    const r = this.client('getApiKey');
    return parse<ApiKeyRecord>(await this.call('getApiKey', () => r.hget(this.k('apikeys'), id)));
  }

  async countApiKeys(): Promise<number> {
    const r = this.client('countApiKeys');
    return this.call('countApiKeys', () => r.hlen(this.k('apikeys')));
  }

  async listApiKeys(tenantId: string): Promise<ApiKeyRecord[]> {
    const list = await this.run('listApiKeys', 'tenantApiKeys', [tenantId]);
    return parseAll<ApiKeyRecord>(list).sort((a, b) => cmp(a.id, b.id));
  }

  async deleteApiKey(id: string, audit: readonly AuditEntry[] = []): Promise<boolean> {
    checks.audit(audit);
    const res = (await this.run('deleteApiKey', 'deleteApiKey', [id, ...auditArgs(audit)])) as [string, number];
    return res[1] === 1;
  }

  async appendAudit(entries: readonly AuditEntry[]): Promise<void> {
    checks.audit(entries);
    if (entries.length === 0) {
      this.client('appendAudit');
      return;
    }
    this.check(await this.run('appendAudit', 'appendAudit', auditArgs(entries)));
  }

  async listAudit(query: AuditQuery): Promise<AuditPage> {
    const r = this.client('listAudit');
    const limit = Math.floor(query.limit);
    if (!(limit > 0)) return { entries: [] };
    if (query.before !== undefined && !STREAM_ID.test(query.before)) return { entries: [] };
    // newest first over the stream, filtered here, a chunk at a time
    const filtered = Object.keys(query).some((k) => k !== 'limit' && k !== 'before' && query[k as keyof AuditQuery] !== undefined);
    const chunk = filtered ? Math.max(limit, 500) : limit;
    const entries: AuditEntry[] = [];
    let end = query.before === undefined ? '+' : `(${query.before}`;
    for (;;) {
      const page = await this.call('listAudit', () => r.xrevrange(this.k('audit'), end, '-', 'COUNT', chunk));
      for (const [id, fields] of page) {
        const entry = JSON.parse(fields[1] ?? 'null') as AuditEntry | null;
        if (entry === null || !auditMatches(entry, query)) continue;
        entries.push(entry);
        if (entries.length >= limit) return { entries, next: id };
      }
      if (page.length < chunk) return { entries };
      end = `(${page[page.length - 1]![0]}`;
    }
  }

  async getMeta(key: string): Promise<string | undefined> {
    const r = this.client('getMeta');
    return (await this.call('getMeta', () => r.hget(this.k('meta'), key))) ?? undefined;
  }

  async setMeta(key: string, value: string): Promise<void> {
    const r = this.client('setMeta');
    await this.call('setMeta', () => r.hset(this.k('meta'), key, value));
  }

  async setMetaIfAbsent(key: string, value: string): Promise<string> {
    const r = this.client('setMetaIfAbsent');
    // HSETNX is atomic; the read after it sees the winner (a meta value is never deleted)
    await this.call('setMetaIfAbsent', () => r.hsetnx(this.k('meta'), key, value));
    return (await this.call('setMetaIfAbsent', () => r.hget(this.k('meta'), key)))!;
  }

  async *exportEntries(): AsyncGenerator<StoreEntry> {
    const op = 'exportEntries';
    const hash = async (key: string): Promise<Record<string, string>> => {
      const r = this.client(op);
      return this.call(op, () => r.hgetall(this.k(key)));
    };
    const tenants = await hash('tenants');
    for (const id of Object.keys(tenants).sort(cmp)) yield { kind: 'tenant', tenant: JSON.parse(tenants[id]!) as TenantRecord };

    // Profile version hashes and bootstrap tokens have no index of their own: one SCAN finds them.
    const { profileKeys, tokens } = await this.scanProfilesAndTokens(op);
    const profiles: ProfileRecord[] = [];
    for (const key of profileKeys) {
      const r = this.client(op);
      profiles.push(...parseAll<ProfileRecord>(await this.call(op, () => r.hvals(key))));
    }
    profiles.sort((a, b) => cmp(a.tenantId, b.tenantId) || cmp(a.id, b.id) || a.version - b.version);
    for (const profile of profiles) yield { kind: 'profileVersion', profile };

    const apiKeys = await hash('apikeys');
    for (const id of Object.keys(apiKeys).sort(cmp)) yield { kind: 'apiKey', apiKey: JSON.parse(apiKeys[id]!) as ApiKeyRecord };
    const meta = await hash('meta');
    for (const key of Object.keys(meta).sort(cmp)) yield { kind: 'meta', key, value: meta[key]! };

    const jtisOf = new Map<string, string[]>();
    for (const [jti, deviceId] of tokens) {
      let list = jtisOf.get(deviceId);
      if (list === undefined) jtisOf.set(deviceId, (list = []));
      list.push(jti);
    }
    tokens.clear();
    let start = '-';
    for (;;) {
      const r = this.client(op);
      const ids = await this.call(op, () => r.zrangebylex(this.k('devids'), start, '+', 'LIMIT', 0, EXPORT_PAGE));
      if (ids.length === 0) break;
      const args: Arg[] = [ids.length];
      for (const id of ids) {
        const jtis = jtisOf.get(id) ?? [];
        args.push(id, jtis.length, ...jtis);
      }
      const page = (await this.run(op, 'exportDevices', args)) as [string, string, string[], string[], string[], string[]][];
      for (const [, record, events, certificates, configDocuments, bootstrapTokens] of page) {
        if (record === '') continue; // removed since the page of ids was read
        yield {
          kind: 'device',
          device: JSON.parse(record) as DeviceRecord,
          events: parseAll<DeviceEvent>(events),
          certificates: parseAll<CertificateRecord>(certificates),
          configDocuments: parseAll<ConfigDocumentRecord>(configDocuments).sort((a, b) => a.version - b.version),
          bootstrapTokens: parseAll<BootstrapTokenRecord>(bootstrapTokens).sort((a, b) => cmp(a.jti, b.jti)),
        };
      }
      if (ids.length < EXPORT_PAGE) break;
      start = `(${ids[ids.length - 1]!}`;
    }
    // the audit log, in the order it was appended
    let from = '-';
    for (;;) {
      const r = this.client(op);
      const page = await this.call(op, () => r.xrange(this.k('audit'), from, '+', 'COUNT', EXPORT_PAGE));
      for (const [, fields] of page) yield { kind: 'audit', entry: JSON.parse(fields[1]!) as AuditEntry };
      if (page.length < EXPORT_PAGE) return;
      from = `(${page[page.length - 1]![0]}`;
    }
  }

  async importEntries(entries: readonly StoreEntry[]): Promise<void> {
    checks.importEntries(entries);
    if (entries.length === 0) {
      this.client('importEntries');
      return;
    }
    const args: Arg[] = [];
    for (const entry of entries) {
      switch (entry.kind) {
        case 'tenant':
          args.push('t', entry.tenant.id, JSON.stringify(entry.tenant));
          break;
        case 'profileVersion': {
          const p = entry.profile;
          args.push('p', p.tenantId, p.id, String(p.version), JSON.stringify(p));
          break;
        }
        case 'apiKey':
          args.push('k', entry.apiKey.id, entry.apiKey.tenantId, JSON.stringify(entry.apiKey));
          break;
        case 'meta':
          args.push('m', entry.key, entry.value);
          break;
        case 'audit':
          args.push('a', JSON.stringify(entry.entry));
          break;
        case 'device': {
          const { device } = entry;
          const { record, args: indexed } = deviceArgs(device, device.revision); // cch, tenant, state, record
          args.push('d', device.id, indexed[0]!, indexed[1]!, indexed[2]!, String(device.revision), record);
          args.push(entry.events.length, ...entry.events.map((e) => JSON.stringify(e)));
          args.push(entry.certificates.length);
          for (const c of entry.certificates) args.push(c.serial, c.keyFingerprint, c.status, JSON.stringify(c));
          args.push(entry.configDocuments.length);
          for (const d of entry.configDocuments) args.push(String(d.version), JSON.stringify(d));
          args.push(entry.bootstrapTokens.length);
          for (const t of entry.bootstrapTokens) args.push(t.jti, JSON.stringify(t));
          break;
        }
      }
    }
    const res = (await this.run('importEntries', 'importEntries', args)) as string[];
    if (res[0] === 'IMPORT_CONFLICT') {
      const [, kind = '', id = ''] = res;
      throw new StoreError('IMPORT_CONFLICT', `${kind} ${JSON.stringify(id)} exists in the target store`, { details: { kind, id } });
    }
    this.check(res);
  }

  async countEntries(): Promise<StoreCounts> {
    const op = 'countEntries';
    const r = this.client(op);
    const [tenants, apiKeys, meta, auditEntries] = await this.call(op, () =>
      Promise.all([r.hlen(this.k('tenants')), r.hlen(this.k('apikeys')), r.hlen(this.k('meta')), r.xlen(this.k('audit'))]),
    );
    const counts: StoreCounts = {
      tenants,
      profileVersions: 0,
      apiKeys,
      meta,
      devices: 0,
      events: 0,
      certificates: 0,
      configDocuments: 0,
      bootstrapTokens: 0,
      auditEntries,
    };
    let start = '-';
    for (;;) {
      const [n, last, events, certificates, configDocuments] = (await this.run(op, 'countDevices', [start, EXPORT_PAGE])) as [
        number,
        string,
        number,
        number,
        number,
      ];
      counts.devices += n;
      counts.events += events;
      counts.certificates += certificates;
      counts.configDocuments += configDocuments;
      if (n < EXPORT_PAGE) break;
      start = `(${last}`;
    }
    const { profileKeys, tokens } = await this.scanProfilesAndTokens(op);
    counts.bootstrapTokens = tokens.size;
    for (const key of profileKeys) {
      const rr = this.client(op);
      counts.profileVersions += await this.call(op, () => rr.hlen(key));
    }
    return counts;
  }

  /** The keys of every profile version hash and, for every bootstrap token, jti -> device id (one SCAN). */
  private async scanProfilesAndTokens(op: string): Promise<{ profileKeys: Set<string>; tokens: Map<string, string> }> {
    const profileKeys = new Set<string>();
    const tokens = new Map<string, string>();
    let cursor = '0';
    do {
      const [next, profs, toks] = (await this.run(op, 'exportScan', [cursor, SCAN_COUNT])) as [string, string[], string[]];
      for (const key of profs) profileKeys.add(key);
      for (let i = 0; i < toks.length; i += 2) tokens.set(toks[i]!, toks[i + 1]!);
      cursor = next;
    } while (cursor !== '0');
    return { profileKeys, tokens };
  }

  // ---------------------------------------------------------------------------------------------

  /** Indexes the expiry of tokens stored before the token expiry index existed (once per store). */
  private async buildTokenIndex(): Promise<void> {
    const r = this.client('start');
    if ((await r.get(this.k('idx:tokexp'))) === '1') return;
    let cursor = '0';
    do cursor = (await this.run('start', 'buildTokenIndex', [cursor, SCAN_COUNT])) as string;
    while (cursor !== '0');
  }

  /** Indexes the deadlines of devices stored before the due index existed (once per store). */
  private async buildDueIndex(): Promise<void> {
    const r = this.client('start');
    if ((await r.get(this.k('idx:due'))) === '1') return;
    let start = '-';
    for (;;) {
      const last = (await this.run('start', 'buildDueIndex', [start, 1000])) as string;
      if (last === '') return;
      start = `(${last}`;
    }
  }

  private k(kind: string, id = ''): string {
    return `${this.prefix}${kind}${id}`;
  }

  private profileKey(tenantId: string, id: string): string {
    return this.k('prof:', `${Buffer.byteLength(tenantId)}:${tenantId}:${id}`);
  }

  private configArgs(doc: ConfigDocumentRecord | undefined): Arg[] {
    return doc === undefined ? ['0', '', ''] : ['1', String(doc.version), JSON.stringify(doc)];
  }

  private client(op: string): RedisClient {
    if (this.redis === undefined) throw new StoreError('STORE_UNAVAILABLE', `Redis store: ${op}: the store is not started`);
    return this.redis;
  }

  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      return unavailable(op, err);
    }
  }

  /**
   * Runs one of the scripts (EVALSHA, falling back to EVAL): KEYS[1] is the meta hash (for Cluster
   * routing), ARGV[1] the prefix.
   */
  private async run(op: string, name: ScriptName, args: readonly Arg[]): Promise<unknown> {
    const r = this.client(op);
    const fn = (r as unknown as Record<ScriptName, (...a: Arg[]) => Promise<unknown>>)[name];
    return this.call(op, () => fn.call(r, this.k('meta'), this.prefix, ...args));
  }

  /** Throws the StoreError a script reported, if any. */
  private check(res: unknown, make?: (code: StoreErrorCode, arg: string | undefined) => StoreError): void {
    const [code, arg] = res as [string, string | undefined];
    if (code === 'OK') return;
    if (!STORE_CODES.has(code)) {
      throw new StoreError('STORE_UNAVAILABLE', `Redis store: unexpected script reply ${JSON.stringify(code)}`);
    }
    throw make === undefined ? new StoreError(code as StoreErrorCode) : make(code as StoreErrorCode, arg);
  }
}
