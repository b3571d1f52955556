/**
 * The SQLite backend of the Store (better-sqlite3, one file, WAL).
 *
 * better-sqlite3 is synchronous: every method runs to completion before the next one starts in
 * this process, so calls from one process never interleave. Across processes (or several
 * SqliteStore instances on one file) every multi-step operation runs in one BEGIN IMMEDIATE
 * transaction: the write lock is taken before the first read of a check, so a compare-and-set
 * cannot be overtaken between its check and its write. busy_timeout makes a second writer wait
 * for the lock instead of failing at once.
 *
 * Errors: the documented conditions throw coded StoreErrors; anything unexpected from the driver
 * becomes STORE_UNAVAILABLE. A write whose parts contradict each other (an event, certificate or
 * config document of another device than the one written) is a caller bug: it throws a plain
 * Error before the database is touched.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { StoreError } from './errors.js';
import { ArgumentChecks } from './arguments.js';
import { migrations } from './sqlite-migrations.js';
import { GroupCommit } from './sqlite-group-commit.js';
import type {
  ApiKeyRecord,
  AuditPage,
  AuditQuery,
  BootstrapTokenRecord,
  CertificateRecord,
  CertificateStatusChange,
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

const BUSY_TIMEOUT_MS = 5000;
/** Devices per page of exportEntries. */
const EXPORT_PAGE = 500;

type Db = Database.Database;
type DeviceState = Device['state'];

interface DeviceParams {
  id: string;
  claimCodeHash: string;
  state: string;
  model: string;
  tenantId: string;
  profileId: string | null;
  deadlineAt: string | null;
  provisionalUntil: string | null;
  revision: number;
  record: string;
}

interface CertificateParams {
  serial: string;
  deviceId: string;
  keyFingerprint: string;
  status: string;
  issuedAt: string;
  notAfter: string;
  revokedAt: string | null;
  record: string;
}

/**
 * The listDevices filters: each present field of DeviceQuery adds its condition (joined with AND).
 * Statements are prepared per combination of present fields (at most 2^7) and cached.
 */
const DEVICE_FILTERS = [
  ['tenantId', 'tenant_id = @tenantId'],
  ['state', 'state = @state'],
  ['states', 'state IN (SELECT value FROM json_each(@states))'],
  ['profileId', 'profile_id = @profileId'],
  ['deadlineBefore', 'deadline_at < @deadlineBefore'],
  ['provisionalBefore', 'provisional_until < @provisionalBefore'],
  ['after', 'id > @after'],
] as const satisfies readonly (readonly [keyof DeviceQuery, string])[];

type DeviceFilter = (typeof DEVICE_FILTERS)[number][0];

/** The listAudit filters, as DEVICE_FILTERS (newest first: seq descending; `before` is a seq). */
const AUDIT_FILTERS = [
  ['tenantId', 'tenant_id = @tenantId'],
  ['deviceId', 'device_id = @deviceId'],
  ['action', 'action = @action'],
  ['outcome', 'outcome = @outcome'],
  ['since', 'at >= @since'],
  ['until', 'at < @until'],
  ['before', 'seq < @before'],
] as const satisfies readonly (readonly [keyof AuditQuery, string])[];

type AuditFilter = (typeof AUDIT_FILTERS)[number][0];

interface AuditParams {
  at: string;
  tenantId: string;
  deviceId: string | null;
  action: string;
  outcome: string;
  record: string;
}

function auditParams(entry: AuditEntry): AuditParams {
  return {
    at: entry.at,
    tenantId: entry.tenantId,
    deviceId: entry.deviceId ?? null,
    action: entry.action,
    outcome: entry.outcome,
    record: JSON.stringify(entry),
  };
}

function prepareStatements(db: Db) {
  const devCols =
    'id, claim_code_hash, state, model, tenant_id, profile_id, deadline_at, provisional_until, revision, record';
  const devParams =
    '@id, @claimCodeHash, @state, @model, @tenantId, @profileId, @deadlineAt, @provisionalUntil, @revision, @record';
  const listDevicesCache = new Map<string, Database.Statement<Record<string, unknown>, string>>();
  const listAuditCache = new Map<string, Database.Statement<Record<string, unknown>, { seq: number; record: string }>>();
  return {
    getDevice: db.prepare<[string], string>('SELECT record FROM devices WHERE id = ?').pluck(),
    getDeviceRevision: db.prepare<[string], number>('SELECT revision FROM devices WHERE id = ?').pluck(),
    getDeviceByClaimCodeHash: db
      .prepare<[string], string>('SELECT record FROM devices WHERE claim_code_hash = ?')
      .pluck(),
    getDeviceIdByClaimCodeHash: db
      .prepare<[string], string>('SELECT id FROM devices WHERE claim_code_hash = ?')
      .pluck(),
    insertDevice: db.prepare<DeviceParams>(`INSERT INTO devices (${devCols}) VALUES (${devParams})`),
    updateDevice: db.prepare<DeviceParams & { expectedRevision: number }>(
      `UPDATE devices
          SET claim_code_hash = @claimCodeHash, state = @state, model = @model, tenant_id = @tenantId,
              profile_id = @profileId, deadline_at = @deadlineAt, provisional_until = @provisionalUntil,
              revision = @revision, record = @record
        WHERE id = @id AND revision = @expectedRevision`,
    ),
    /** The listDevices statement for this set of filters. */
    listDevices(filters: readonly DeviceFilter[]) {
      const key = filters.join(',');
      let stmt = listDevicesCache.get(key);
      if (stmt === undefined) {
        const where = DEVICE_FILTERS.filter(([f]) => filters.includes(f)).map(([, sql]) => sql);
        stmt = db
          .prepare<Record<string, unknown>, string>(
            `SELECT record FROM devices ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id LIMIT @limit`,
          )
          .pluck();
        listDevicesCache.set(key, stmt);
      }
      return stmt;
    },
    /** The listAudit statement for this set of filters. */
    listAudit(filters: readonly AuditFilter[]) {
      const key = filters.join(',');
      let stmt = listAuditCache.get(key);
      if (stmt === undefined) {
        const where = AUDIT_FILTERS.filter(([f]) => filters.includes(f)).map(([, sql]) => sql);
        stmt = db.prepare<Record<string, unknown>, { seq: number; record: string }>(
          `SELECT seq, record FROM audit_log ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT @limit`,
        );
        listAuditCache.set(key, stmt);
      }
      return stmt;
    },
    insertAudit: db.prepare<AuditParams>(
      `INSERT INTO audit_log (at, tenant_id, device_id, action, outcome, record)
       VALUES (@at, @tenantId, @deviceId, @action, @outcome, @record)`,
    ),
    exportAuditPage: db.prepare<[number, number], { seq: number; record: string }>(
      'SELECT seq, record FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?',
    ),
    countDevicesByState: db.prepare<[], { state: string; n: number }>(
      'SELECT state, COUNT(*) AS n FROM devices GROUP BY state',
    ),
    countTenantDevicesByState: db.prepare<[string], { state: string; n: number }>(
      'SELECT state, COUNT(*) AS n FROM devices WHERE tenant_id = ? GROUP BY state',
    ),

    insertEvent: db.prepare<[string, string]>('INSERT INTO device_events (device_id, record) VALUES (?, ?)'),
    listEvents: db
      .prepare<[string], string>('SELECT record FROM device_events WHERE device_id = ? ORDER BY id')
      .pluck(),

    insertToken: db.prepare<[string, string, string, string | null, string]>(
      'INSERT INTO bootstrap_tokens (jti, device_id, expires_at, consumed_at, record) VALUES (?, ?, ?, ?, ?)',
    ),
    getToken: db.prepare<[string], string>('SELECT record FROM bootstrap_tokens WHERE jti = ?').pluck(),
    consumeToken: db.prepare<[string, string, string]>(
      'UPDATE bootstrap_tokens SET consumed_at = ?, record = ? WHERE jti = ?',
    ),
    // Served by the partial index bootstrap_tokens_unconsumed_expiry (migration 3).
    deleteExpiredTokens: db
      .prepare<[string, number], string>(
        `DELETE FROM bootstrap_tokens WHERE jti IN (
           SELECT jti FROM bootstrap_tokens WHERE consumed_at IS NULL AND expires_at < ? ORDER BY expires_at, jti LIMIT ?
         ) RETURNING record`,
      )
      .pluck(),

    getCertificate: db.prepare<[string], string>('SELECT record FROM certificates WHERE serial = ?').pluck(),
    insertCertificate: db.prepare<CertificateParams>(
      `INSERT INTO certificates (serial, device_id, key_fingerprint, status, issued_at, not_after, revoked_at, record)
       VALUES (@serial, @deviceId, @keyFingerprint, @status, @issuedAt, @notAfter, @revokedAt, @record)`,
    ),
    setCertificateStatus: db.prepare<{ serial: string; status: string; revokedAt: string | null; record: string }>(
      'UPDATE certificates SET status = @status, revoked_at = @revokedAt, record = @record WHERE serial = @serial',
    ),
    listCertificates: db
      .prepare<[string], string>(
        'SELECT record FROM certificates WHERE device_id = ? ORDER BY issued_at DESC, rowid DESC',
      )
      .pluck(),
    findCertificateByKey: db
      .prepare<[string], string>(
        'SELECT record FROM certificates WHERE key_fingerprint = ? ORDER BY issued_at DESC, rowid DESC LIMIT 1',
      )
      .pluck(),
    keyHeldByOtherDevice: db
      .prepare<[string, string], number>(
        'SELECT 1 FROM certificates WHERE key_fingerprint = ? AND device_id <> ? LIMIT 1',
      )
      .pluck(),
    supersedeActiveCertificates: db.prepare<[string]>(
      `UPDATE certificates SET status = 'superseded', record = json_set(record, '$.status', 'superseded')
        WHERE device_id = ? AND status = 'active'`,
    ),
    revokeActiveCertificates: db.prepare<{ deviceId: string; revokedAt: string; revocationReason: string }>(
      `UPDATE certificates
          SET status = 'revoked', revoked_at = @revokedAt,
              record = json_set(record, '$.status', 'revoked', '$.revokedAt', @revokedAt, '$.revocationReason', @revocationReason)
        WHERE device_id = @deviceId AND status = 'active'`,
    ),
    listRevokedCertificates: db
      .prepare<[string], string>(
        `SELECT record FROM certificates
          WHERE status = 'revoked' AND not_after > ?
          ORDER BY revoked_at, serial`,
      )
      .pluck(),

    insertConfigDocument: db.prepare<[string, number, string]>(
      'INSERT INTO config_documents (device_id, version, record) VALUES (?, ?, ?)',
    ),
    getConfigDocument: db
      .prepare<[string, number], string>('SELECT record FROM config_documents WHERE device_id = ? AND version = ?')
      .pluck(),
    configDocumentExists: db
      .prepare<[string, number], number>('SELECT 1 FROM config_documents WHERE device_id = ? AND version = ?')
      .pluck(),

    insertTenant: db.prepare<[string, string]>('INSERT INTO tenants (id, record) VALUES (?, ?)'),
    getTenant: db.prepare<[string], string>('SELECT record FROM tenants WHERE id = ?').pluck(),
    updateTenant: db.prepare<[string, string]>('UPDATE tenants SET record = ? WHERE id = ?'),
    listTenants: db.prepare<[], string>('SELECT record FROM tenants ORDER BY id').pluck(),

    profileVersionExists: db
      .prepare<[string, string, number], number>(
        'SELECT 1 FROM profile_versions WHERE tenant_id = ? AND id = ? AND version = ?',
      )
      .pluck(),
    insertProfileVersion: db.prepare<[string, string, number, string]>(
      'INSERT INTO profile_versions (tenant_id, id, version, record) VALUES (?, ?, ?, ?)',
    ),
    getProfileVersion: db
      .prepare<[string, string, number], string>(
        'SELECT record FROM profile_versions WHERE tenant_id = ? AND id = ? AND version = ?',
      )
      .pluck(),
    getLatestProfile: db
      .prepare<[string, string], string>(
        'SELECT record FROM profile_versions WHERE tenant_id = ? AND id = ? ORDER BY version DESC LIMIT 1',
      )
      .pluck(),
    listLatestProfiles: db
      .prepare<{ tenantId: string }, string>(
        `SELECT record FROM profile_versions AS p
          WHERE tenant_id = @tenantId
            AND version = (SELECT MAX(version) FROM profile_versions AS q WHERE q.tenant_id = p.tenant_id AND q.id = p.id)
          ORDER BY id`,
      )
      .pluck(),

    insertApiKey: db.prepare<[string, string, string]>('INSERT INTO api_keys (id, tenant_id, record) VALUES (?, ?, ?)'),
    getApiKey: db.prepare<[string], string>('SELECT record FROM api_keys WHERE id = ?').pluck(),
    countApiKeys: db.prepare<[], number>('SELECT COUNT(*) FROM api_keys').pluck(),
    listApiKeys: db.prepare<[string], string>('SELECT record FROM api_keys WHERE tenant_id = ? ORDER BY id').pluck(),
    deleteApiKey: db.prepare<[string]>('DELETE FROM api_keys WHERE id = ?'),

    getMeta: db.prepare<[string], string>('SELECT value FROM meta WHERE key = ?').pluck(),
    setMeta: db.prepare<[string, string]>(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    ),
    insertMeta: db.prepare<[string, string]>('INSERT INTO meta (key, value) VALUES (?, ?)'),
    insertMetaIfAbsent: db.prepare<[string, string]>('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING'),

    // exportEntries / countEntries: the order of every listing depends only on the data.
    exportProfileVersions: db
      .prepare<[], string>('SELECT record FROM profile_versions ORDER BY tenant_id, id, version')
      .pluck(),
    exportApiKeys: db.prepare<[], string>('SELECT record FROM api_keys ORDER BY id').pluck(),
    exportMeta: db.prepare<[], { key: string; value: string }>('SELECT key, value FROM meta ORDER BY key'),
    exportDevicePage: db.prepare<[string, number], { id: string; record: string }>(
      'SELECT id, record FROM devices WHERE id > ? ORDER BY id LIMIT ?',
    ),
    // Children of the devices from the first to the last id of a page (inclusive).
    exportEvents: db.prepare<[string, string], { deviceId: string; record: string }>(
      'SELECT device_id AS deviceId, record FROM device_events WHERE device_id BETWEEN ? AND ? ORDER BY device_id, id',
    ),
    exportCertificates: db.prepare<[string, string], { deviceId: string; record: string }>(
      'SELECT device_id AS deviceId, record FROM certificates WHERE device_id BETWEEN ? AND ? ORDER BY device_id, rowid',
    ),
    exportConfigDocuments: db.prepare<[string, string], { deviceId: string; record: string }>(
      'SELECT device_id AS deviceId, record FROM config_documents WHERE device_id BETWEEN ? AND ? ORDER BY device_id, version',
    ),
    exportTokens: db.prepare<[string, string], { deviceId: string; record: string }>(
      'SELECT device_id AS deviceId, record FROM bootstrap_tokens WHERE device_id BETWEEN ? AND ? ORDER BY device_id, jti',
    ),
    countEntries: db.prepare<[], StoreCounts>(
      `SELECT (SELECT COUNT(*) FROM tenants) AS tenants,
              (SELECT COUNT(*) FROM profile_versions) AS profileVersions,
              (SELECT COUNT(*) FROM api_keys) AS apiKeys,
              (SELECT COUNT(*) FROM meta) AS meta,
              (SELECT COUNT(*) FROM devices) AS devices,
              (SELECT COUNT(*) FROM device_events) AS events,
              (SELECT COUNT(*) FROM certificates) AS certificates,
              (SELECT COUNT(*) FROM config_documents) AS configDocuments,
              (SELECT COUNT(*) FROM bootstrap_tokens) AS bootstrapTokens,
              (SELECT COUNT(*) FROM audit_log) AS auditEntries`,
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

function parse<T>(json: string | undefined): T | undefined {
  return json === undefined ? undefined : (JSON.parse(json) as T);
}

function deviceParams(device: DeviceRecord, revision: number): DeviceParams {
  const stored: DeviceRecord = { ...device, revision };
  return {
    id: stored.id,
    claimCodeHash: stored.claimCodeHash,
    state: stored.state,
    model: stored.model,
    tenantId: stored.tenantId,
    profileId: stored.profileId ?? null,
    deadlineAt: stored.deadlineAt ?? null,
    provisionalUntil: stored.provisionalUntil ?? null,
    revision,
    record: JSON.stringify(stored),
  };
}

function certificateParams(certificate: CertificateRecord): CertificateParams {
  return {
    serial: certificate.serial,
    deviceId: certificate.deviceId,
    keyFingerprint: certificate.keyFingerprint,
    status: certificate.status,
    issuedAt: certificate.issuedAt,
    notAfter: certificate.notAfter,
    revokedAt: certificate.revokedAt ?? null,
    record: JSON.stringify(certificate),
  };
}

/**
 * The certificate after a status change: status, revokedAt and revocationReason are all taken from
 * the change (a field the change leaves out is removed), everything else is kept.
 */
function applyStatusChange(current: CertificateRecord, change: CertificateStatusChange): CertificateRecord {
  const { revokedAt: _revokedAt, revocationReason: _reason, ...rest } = current;
  const next: CertificateRecord = { ...rest, status: change.status };
  if (change.revokedAt !== undefined) next.revokedAt = change.revokedAt;
  if (change.revocationReason !== undefined) next.revocationReason = change.revocationReason;
  return next;
}

/**
 * Programming errors (a caller bug, not a condition of the data): thrown as plain Errors before
 * the store is touched, never mapped to a StoreError.
 */



function sqliteCode(err: unknown): string | undefined {
  return err instanceof Database.SqliteError ? err.code : undefined;
}

/** Re-throws StoreErrors as they are; anything else (SQLITE_BUSY, I/O, closed db, ...) becomes STORE_UNAVAILABLE. */
function unavailable(op: string, err: unknown): never {
  if (err instanceof StoreError) throw err;
  const detail = err instanceof Error ? err.message : String(err);
  throw new StoreError('STORE_UNAVAILABLE', `SQLite store: ${op} failed: ${detail}`, { cause: err });
}

/** Maps a SQLite constraint violation to the StoreError the operation documents. */
function constraint(err: unknown, map: Partial<Record<'PRIMARYKEY' | 'UNIQUE' | 'FOREIGNKEY', StoreErrorCode>>): void {
  const code = sqliteCode(err);
  if (code === undefined || !code.startsWith('SQLITE_CONSTRAINT_')) return;
  const mapped = map[code.slice('SQLITE_CONSTRAINT_'.length) as keyof typeof map];
  if (mapped !== undefined) throw new StoreError(mapped, undefined, { cause: err });
}

type StoreErrorCode = ConstructorParameters<typeof StoreError>[0];

const checks = new ArgumentChecks('SqliteStore');

export class SqliteStore implements Store {
  readonly file: string;
  private db: Db | undefined;
  private stmts: Statements | undefined;
  private tx: Transactions | undefined;
  /** Writes are committed in groups (sqlite-group-commit.ts); each settles after its COMMIT. */
  private group: GroupCommit | undefined;

  constructor(opts: { file: string }) {
    this.file = opts.file;
  }

  async start(): Promise<void> {
    if (this.db !== undefined) return;
    let db: Db | undefined;
    try {
      if (this.file !== ':memory:') {
        fs.mkdirSync(path.dirname(path.resolve(this.file)), { recursive: true, mode: 0o700 });
        // Create the file ourselves so that it (and the -wal/-shm files SQLite derives from its
        // mode) is never readable by others: it holds claim code hashes and Wi-Fi secrets.
        fs.closeSync(fs.openSync(this.file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600));
      }
      db = new Database(this.file, { timeout: BUSY_TIMEOUT_MS });
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal' && this.file !== ':memory:') {
        throw new Error(`cannot enable WAL journal mode (got ${String(mode)})`);
      }
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      migrate(db);
      this.stmts = prepareStatements(db);
      this.tx = prepareTransactions(db, this.stmts);
      this.group = new GroupCommit(db, (err) => new StoreError('STORE_UNAVAILABLE', `SQLite store: commit failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
      this.db = db;
    } catch (err) {
      db?.close();
      this.stmts = undefined;
      this.tx = undefined;
      unavailable('start', err);
    }
  }

  async stop(): Promise<void> {
    // what is queued is committed (and answered) before the database closes
    if (this.db?.open) this.group?.flush();
    const db = this.db;
    this.db = undefined;
    this.stmts = undefined;
    this.tx = undefined;
    this.group = undefined;
    if (db?.open) {
      try {
        db.close();
      } catch (err) {
        unavailable('stop', err);
      }
    }
  }

  async ping(): Promise<void> {
    this.open('ping');
    try {
      this.db!.prepare('SELECT 1').pluck().get();
    } catch (err) {
      unavailable('ping', err);
    }
  }

  async insertDevice(device: DeviceRecord, events: DeviceEvent[]): Promise<void> {
    checks.deviceWrite(device, events);
    const { tx } = this.open('insertDevice');
    return this.write(() => {
      try {
        tx.insertDevice.immediate(device, events);
      } catch (err) {
        constraint(err, { PRIMARYKEY: 'DEVICE_EXISTS', UNIQUE: 'CLAIM_CODE_IN_USE', FOREIGNKEY: 'DEVICE_NOT_FOUND' });
        unavailable('insertDevice', err);
      }
    });
  }

  async insertDevices(devices: readonly DeviceRecord[], events: DeviceEvent[]): Promise<void> {
    const ids = new Set<string>();
    for (const device of devices) {
      checks.deviceWrite(device, events.filter((e) => e.deviceId === device.id));
      if (ids.has(device.id)) throw new Error(`insertDevices: device ${device.id} appears twice`);
      ids.add(device.id);
    }
    if (events.some((e) => !ids.has(e.deviceId))) throw new Error('insertDevices: an event names a device that is not inserted');
    const { tx } = this.open('insertDevices');
    return this.write(() => {
      try {
        tx.insertDevices.immediate(devices, events);
      } catch (err) {
        if (err instanceof StoreError) throw err;
        constraint(err, { PRIMARYKEY: 'DEVICE_EXISTS', UNIQUE: 'CLAIM_CODE_IN_USE' });
        unavailable('insertDevices', err);
      }
    });
  }

  async getDevice(id: string): Promise<DeviceRecord | undefined> {
    return this.read('getDevice', (s) => parse<DeviceRecord>(s.getDevice.get(id)));
  }

  async findDeviceByClaimCodeHash(hash: string): Promise<DeviceRecord | undefined> {
    return this.read('findDeviceByClaimCodeHash', (s) => parse<DeviceRecord>(s.getDeviceByClaimCodeHash.get(hash)));
  }

  async listDevices(query: DeviceQuery): Promise<DeviceRecord[]> {
    const limit = Math.floor(query.limit);
    // SQLite reads a negative LIMIT as "no limit"; an empty page is the honest answer.
    if (!(limit > 0)) return [];
    const filters: DeviceFilter[] = [];
    const params: Record<string, unknown> = { limit };
    for (const [field] of DEVICE_FILTERS) {
      const value = query[field];
      if (value === undefined) continue;
      filters.push(field);
      // states travels as one JSON array parameter (json_each), so one statement serves any length.
      params[field] = field === 'states' ? JSON.stringify(value) : value;
    }
    return this.read('listDevices', (s) =>
      s
        .listDevices(filters)
        .all(params)
        .map((json) => JSON.parse(json) as DeviceRecord),
    );
  }

  async countDevicesByState(tenantId?: string): Promise<Partial<Record<DeviceState, number>>> {
    return this.read('countDevicesByState', (s) => {
      const counts: Partial<Record<DeviceState, number>> = {};
      const rows = tenantId === undefined ? s.countDevicesByState.all() : s.countTenantDevicesByState.all(tenantId);
      for (const row of rows) counts[row.state as DeviceState] = row.n;
      return counts;
    });
  }

  async updateDevice(
    device: DeviceRecord,
    expectedRevision: number,
    events: DeviceEvent[],
    extras: DeviceUpdateExtras = {},
  ): Promise<DeviceRecord> {
    checks.updateDevice(device, events, extras);
    const { tx } = this.open('updateDevice');
    return this.write(() => {
      try {
        return tx.updateDevice.immediate(device, expectedRevision, events, extras);
      } catch (err) {
        constraint(err, { UNIQUE: 'CLAIM_CODE_IN_USE', FOREIGNKEY: 'DEVICE_NOT_FOUND' });
        return unavailable('updateDevice', err);
      }
    });
  }

  async listEvents(deviceId: string): Promise<DeviceEvent[]> {
    return this.read('listEvents', (s) => s.listEvents.all(deviceId).map((json) => JSON.parse(json) as DeviceEvent));
  }

  async insertBootstrapToken(token: BootstrapTokenRecord): Promise<void> {
    const { stmts } = this.open('insertBootstrapToken');
    return this.write(() => {
      try {
        stmts.insertToken.run(token.jti, token.deviceId, token.expiresAt, token.consumedAt ?? null, JSON.stringify(token));
      } catch (err) {
        constraint(err, { PRIMARYKEY: 'TOKEN_EXISTS', FOREIGNKEY: 'DEVICE_NOT_FOUND' });
        unavailable('insertBootstrapToken', err);
      }
    });
  }

  async getBootstrapToken(jti: string): Promise<BootstrapTokenRecord | undefined> {
    return this.read('getBootstrapToken', (s) => parse<BootstrapTokenRecord>(s.getToken.get(jti)));
  }

  async deleteExpiredBootstrapTokens(before: string, limit: number): Promise<BootstrapTokenRecord[]> {
    const n = Math.floor(limit);
    if (!(n > 0)) return [];
    const { stmts } = this.open('deleteExpiredBootstrapTokens');
    return this.write(() => {
      try {
        return stmts.deleteExpiredTokens
          .all(before, n)
          .map((json) => JSON.parse(json) as BootstrapTokenRecord)
          .sort((a, b) => (a.expiresAt < b.expiresAt ? -1 : a.expiresAt > b.expiresAt ? 1 : a.jti < b.jti ? -1 : a.jti > b.jti ? 1 : 0));
      } catch (err) {
        return unavailable('deleteExpiredBootstrapTokens', err);
      }
    });
  }

  async commitIssuance(commit: IssuanceCommit): Promise<DeviceRecord> {
    checks.commitIssuance(commit);
    const { tx } = this.open('commitIssuance');
    return this.write(() => {
      try {
        return tx.commitIssuance.immediate(commit);
      } catch (err) {
        // The explicit checks inside the transaction come first; these only catch what they cannot
        // (a claim code hash changed onto another device's).
        constraint(err, { UNIQUE: 'CLAIM_CODE_IN_USE', FOREIGNKEY: 'DEVICE_NOT_FOUND' });
        return unavailable('commitIssuance', err);
      }
    });
  }

  async getCertificate(serial: string): Promise<CertificateRecord | undefined> {
    return this.read('getCertificate', (s) => parse<CertificateRecord>(s.getCertificate.get(serial)));
  }

  async listCertificates(deviceId: string): Promise<CertificateRecord[]> {
    return this.read('listCertificates', (s) =>
      s.listCertificates.all(deviceId).map((json) => JSON.parse(json) as CertificateRecord),
    );
  }

  async findCertificateByKey(keyFingerprint: string): Promise<CertificateRecord | undefined> {
    return this.read('findCertificateByKey', (s) => parse<CertificateRecord>(s.findCertificateByKey.get(keyFingerprint)));
  }

  async listRevokedCertificates(notAfterAfter: string): Promise<CertificateRecord[]> {
    return this.read('listRevokedCertificates', (s) =>
      s.listRevokedCertificates.all(notAfterAfter).map((json) => JSON.parse(json) as CertificateRecord),
    );
  }

  async getConfigDocument(deviceId: string, version: number): Promise<ConfigDocumentRecord | undefined> {
    return this.read('getConfigDocument', (s) => parse<ConfigDocumentRecord>(s.getConfigDocument.get(deviceId, version)));
  }

  async insertTenant(tenant: TenantRecord): Promise<void> {
    checks.requireString(tenant.id, 'tenant.id');
    const { stmts } = this.open('insertTenant');
    return this.write(() => {
      try {
        stmts.insertTenant.run(tenant.id, JSON.stringify(tenant));
      } catch (err) {
        constraint(err, { PRIMARYKEY: 'TENANT_EXISTS' });
        unavailable('insertTenant', err);
      }
    });
  }

  async getTenant(id: string): Promise<TenantRecord | undefined> {
    return this.read('getTenant', (s) => parse<TenantRecord>(s.getTenant.get(id)));
  }

  async updateTenant(tenant: TenantRecord): Promise<void> {
    const { changes } = this.read('updateTenant', (s) => s.updateTenant.run(JSON.stringify(tenant), tenant.id));
    if (changes === 0) throw new StoreError('TENANT_NOT_FOUND');
  }

  async listTenants(): Promise<TenantRecord[]> {
    return this.read('listTenants', (s) => s.listTenants.all().map((json) => JSON.parse(json) as TenantRecord));
  }

  async insertProfileVersion(profile: ProfileRecord): Promise<void> {
    checks.profileVersion(profile);
    const { tx } = this.open('insertProfileVersion');
    return this.write(() => {
      try {
        tx.insertProfileVersion.immediate(profile);
      } catch (err) {
        constraint(err, { PRIMARYKEY: 'PROFILE_VERSION_EXISTS' });
        unavailable('insertProfileVersion', err);
      }
    });
  }

  async getProfile(tenantId: string, id: string, version?: number): Promise<ProfileRecord | undefined> {
    return this.read('getProfile', (s) =>
      parse<ProfileRecord>(
        version === undefined ? s.getLatestProfile.get(tenantId, id) : s.getProfileVersion.get(tenantId, id, version),
      ),
    );
  }

  async listProfiles(tenantId: string): Promise<ProfileRecord[]> {
    return this.read('listProfiles', (s) =>
      s.listLatestProfiles.all({ tenantId }).map((json) => JSON.parse(json) as ProfileRecord),
    );
  }

  async insertApiKey(key: ApiKeyRecord, audit: readonly AuditEntry[] = []): Promise<void> {
    checks.requireString(key.tenantId, 'apiKey.tenantId');
    checks.audit(audit);
    const { tx } = this.open('insertApiKey');
    return this.write(() => {
      try {
        tx.insertApiKey.immediate(key, audit);
      } catch (err) {
        constraint(err, { PRIMARYKEY: 'API_KEY_EXISTS' });
        unavailable('insertApiKey', err);
      }
    });
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | undefined> {
    return this.read('getApiKey', (s) => parse<ApiKeyRecord>(s.getApiKey.get(id)));
  }

  async countApiKeys(): Promise<number> {
    return this.read('countApiKeys', (s) => s.countApiKeys.get() ?? 0);
  }

  async listApiKeys(tenantId: string): Promise<ApiKeyRecord[]> {
    return this.read('listApiKeys', (s) => s.listApiKeys.all(tenantId).map((json) => JSON.parse(json) as ApiKeyRecord));
  }

  async deleteApiKey(id: string, audit: readonly AuditEntry[] = []): Promise<boolean> {
    checks.audit(audit);
    const { tx } = this.open('deleteApiKey');
    return this.write(() => {
      try {
        return tx.deleteApiKey.immediate(id, audit);
      } catch (err) {
        return unavailable('deleteApiKey', err);
      }
    });
  }

  async appendAudit(entries: readonly AuditEntry[]): Promise<void> {
    checks.audit(entries);
    const { tx } = this.open('appendAudit');
    return this.write(() => {
      try {
        tx.appendAudit.immediate(entries);
      } catch (err) {
        unavailable('appendAudit', err);
      }
    });
  }

  async listAudit(query: AuditQuery): Promise<AuditPage> {
    const limit = Math.floor(query.limit);
    if (!(limit > 0)) return { entries: [] };
    const filters: AuditFilter[] = [];
    const params: Record<string, unknown> = { limit };
    for (const [field] of AUDIT_FILTERS) {
      const value = query[field];
      if (value === undefined) continue;
      filters.push(field);
      // the cursor is a seq; anything else names no entry (an empty page)
      params[field] = field === 'before' ? (/^[0-9]{1,15}$/.test(String(value)) ? Number(value) : 0) : value;
    }
    const rows = this.read('listAudit', (s) => s.listAudit(filters).all(params));
    const entries = rows.map((r) => JSON.parse(r.record) as AuditEntry);
    return rows.length === limit ? { entries, next: String(rows[rows.length - 1]!.seq) } : { entries };
  }

  async getMeta(key: string): Promise<string | undefined> {
    return this.read('getMeta', (s) => s.getMeta.get(key));
  }

  async setMeta(key: string, value: string): Promise<void> {
    this.read('setMeta', (s) => s.setMeta.run(key, value));
  }

  async setMetaIfAbsent(key: string, value: string): Promise<string> {
    return this.read('setMetaIfAbsent', (s) => {
      s.insertMetaIfAbsent.run(key, value);
      return s.getMeta.get(key)!;
    });
  }

  async *exportEntries(): AsyncGenerator<StoreEntry> {
    const op = 'exportEntries';
    for (const json of this.read(op, (s) => s.listTenants.all())) yield { kind: 'tenant', tenant: JSON.parse(json) as TenantRecord };
    for (const json of this.read(op, (s) => s.exportProfileVersions.all())) {
      yield { kind: 'profileVersion', profile: JSON.parse(json) as ProfileRecord };
    }
    for (const json of this.read(op, (s) => s.exportApiKeys.all())) yield { kind: 'apiKey', apiKey: JSON.parse(json) as ApiKeyRecord };
    for (const { key, value } of this.read(op, (s) => s.exportMeta.all())) yield { kind: 'meta', key, value };
    let after = '';
    for (;;) {
      const { tx } = this.open(op);
      let page: StoreEntry[];
      try {
        page = tx.exportDevicePage(after, EXPORT_PAGE);
      } catch (err) {
        return unavailable(op, err);
      }
      yield* page;
      if (page.length < EXPORT_PAGE) break;
      after = (page[page.length - 1] as Extract<StoreEntry, { kind: 'device' }>).device.id;
    }
    // the audit log, in the order it was appended
    let seq = 0;
    for (;;) {
      const rows = this.read(op, (s) => s.exportAuditPage.all(seq, EXPORT_PAGE));
      for (const row of rows) yield { kind: 'audit', entry: JSON.parse(row.record) as AuditEntry };
      if (rows.length < EXPORT_PAGE) return;
      seq = rows[rows.length - 1]!.seq;
    }
  }

  async importEntries(entries: readonly StoreEntry[]): Promise<void> {
    checks.importEntries(entries);
    const { tx } = this.open('importEntries');
    return this.write(() => {
      try {
        tx.importEntries.immediate(entries);
      } catch (err) {
        // The explicit checks come first; a constraint they miss is still a record that exists.
        const code = sqliteCode(err);
        if (code?.startsWith('SQLITE_CONSTRAINT_')) throw new StoreError('IMPORT_CONFLICT', undefined, { cause: err });
        unavailable('importEntries', err);
      }
    });
  }

  async countEntries(): Promise<StoreCounts> {
    return this.read('countEntries', (s) => {
      const counts = s.countEntries.get();
      if (counts === undefined) throw new Error('no counts');
      return { ...counts };
    });
  }

  // ---------------------------------------------------------------------------------------------

  private open(op: string): { stmts: Statements; tx: Transactions } {
    if (this.db === undefined || this.stmts === undefined || this.tx === undefined || !this.db.open) {
      throw new StoreError('STORE_UNAVAILABLE', `SQLite store: ${op}: the store is not started`);
    }
    return { stmts: this.stmts, tx: this.tx };
  }

  /** Queues a write for the next group commit; `run` maps its own errors. */
  private write<T>(run: () => T): Promise<T> {
    return this.group!.enqueue(run);
  }

  /** A single statement (atomic by itself); driver errors become STORE_UNAVAILABLE. */
  private read<T>(op: string, fn: (s: Statements) => T): T {
    const { stmts } = this.open(op);
    try {
      return fn(stmts);
    } catch (err) {
      return unavailable(op, err);
    }
  }
}

/** The multi-step operations, each run with .immediate() (BEGIN IMMEDIATE). */
function prepareTransactions(db: Db, s: Statements) {
  const appendEvents = (events: DeviceEvent[]): void => {
    for (const event of events) s.insertEvent.run(event.deviceId, JSON.stringify(event));
  };

  const appendAudit = (entries: readonly AuditEntry[]): void => {
    for (const entry of entries) s.insertAudit.run(auditParams(entry));
  };

  /** The compare-and-set check; returns nothing, throws DEVICE_NOT_FOUND / REVISION_CONFLICT. */
  const checkRevision = (id: string, expectedRevision: number): void => {
    const revision = s.getDeviceRevision.get(id);
    if (revision === undefined) throw new StoreError('DEVICE_NOT_FOUND');
    if (revision !== expectedRevision) throw new StoreError('REVISION_CONFLICT');
  };

  const checkConfigDocumentIsNew = (doc: ConfigDocumentRecord | undefined): void => {
    if (doc !== undefined && s.configDocumentExists.get(doc.deviceId, doc.version) !== undefined) {
      throw new StoreError('CONFIG_VERSION_EXISTS');
    }
  };

  const insertConfigDocument = (doc: ConfigDocumentRecord | undefined): void => {
    if (doc !== undefined) s.insertConfigDocument.run(doc.deviceId, doc.version, JSON.stringify(doc));
  };

  const writeDevice = (device: DeviceRecord, expectedRevision: number): DeviceRecord => {
    const params = deviceParams(device, expectedRevision + 1);
    const { changes } = s.updateDevice.run({ ...params, expectedRevision });
    // Unreachable under the write lock taken by BEGIN IMMEDIATE; kept as a guard.
    if (changes !== 1) throw new StoreError('REVISION_CONFLICT');
    return JSON.parse(params.record) as DeviceRecord;
  };

  /** Rows of one device page grouped by device id, parsed, each group in the statement's order. */
  const byDevice = <T>(rows: readonly { deviceId: string; record: string }[]): Map<string, T[]> => {
    const out = new Map<string, T[]>();
    for (const row of rows) {
      let list = out.get(row.deviceId);
      if (list === undefined) out.set(row.deviceId, (list = []));
      list.push(JSON.parse(row.record) as T);
    }
    return out;
  };

  const conflict = (kind: string, id: string): never => {
    throw new StoreError('IMPORT_CONFLICT', `${kind} ${JSON.stringify(id)} exists in the target store`, { details: { kind, id } });
  };

  return {
    /** Up to `limit` devices after `after` with everything they own, read in one transaction (one snapshot). */
    exportDevicePage: db.transaction((after: string, limit: number): StoreEntry[] => {
      const devices = s.exportDevicePage.all(after, limit);
      if (devices.length === 0) return [];
      const first = devices[0]!.id;
      const last = devices[devices.length - 1]!.id;
      const events = byDevice<DeviceEvent>(s.exportEvents.all(first, last));
      const certificates = byDevice<CertificateRecord>(s.exportCertificates.all(first, last));
      const configDocuments = byDevice<ConfigDocumentRecord>(s.exportConfigDocuments.all(first, last));
      const tokens = byDevice<BootstrapTokenRecord>(s.exportTokens.all(first, last));
      return devices.map(({ id, record }) => ({
        kind: 'device',
        device: JSON.parse(record) as DeviceRecord,
        events: events.get(id) ?? [],
        certificates: certificates.get(id) ?? [],
        configDocuments: configDocuments.get(id) ?? [],
        bootstrapTokens: tokens.get(id) ?? [],
      }));
    }),

    /** Verbatim inserts; every record is checked for existence right before it is written. */
    importEntries: db.transaction((entries: readonly StoreEntry[]): void => {
      for (const entry of entries) {
        switch (entry.kind) {
          case 'tenant': {
            const { tenant } = entry;
            if (s.getTenant.get(tenant.id) !== undefined) conflict('tenant', tenant.id);
            s.insertTenant.run(tenant.id, JSON.stringify(tenant));
            break;
          }
          case 'profileVersion': {
            const { tenantId, id, version } = entry.profile;
            if (s.profileVersionExists.get(tenantId, id, version) !== undefined) {
              conflict('profile version', `${tenantId}/${id}@${version}`);
            }
            s.insertProfileVersion.run(tenantId, id, version, JSON.stringify(entry.profile));
            break;
          }
          case 'apiKey': {
            const { apiKey } = entry;
            if (s.getApiKey.get(apiKey.id) !== undefined) conflict('API key', apiKey.id);
            s.insertApiKey.run(apiKey.id, apiKey.tenantId, JSON.stringify(apiKey));
            break;
          }
          case 'meta':
            if (s.getMeta.get(entry.key) !== undefined) conflict('meta key', entry.key);
            s.insertMeta.run(entry.key, entry.value);
            break;
          case 'audit':
            appendAudit([entry.entry]);
            break;
          case 'device': {
            const { device } = entry;
            if (s.getDeviceRevision.get(device.id) !== undefined) conflict('device', device.id);
            if (s.getDeviceIdByClaimCodeHash.get(device.claimCodeHash) !== undefined) conflict('claim code of device', device.id);
            s.insertDevice.run(deviceParams(device, device.revision));
            appendEvents(entry.events);
            for (const c of entry.certificates) {
              if (s.getCertificate.get(c.serial) !== undefined) conflict('certificate', c.serial);
              if (s.keyHeldByOtherDevice.get(c.keyFingerprint, device.id) !== undefined) {
                conflict('certificate key fingerprint', c.keyFingerprint);
              }
              s.insertCertificate.run(certificateParams(c));
            }
            for (const doc of entry.configDocuments) {
              if (s.configDocumentExists.get(doc.deviceId, doc.version) !== undefined) {
                conflict('config document', `${doc.deviceId}@${doc.version}`);
              }
              insertConfigDocument(doc);
            }
            for (const t of entry.bootstrapTokens) {
              if (s.getToken.get(t.jti) !== undefined) conflict('bootstrap token', t.jti);
              s.insertToken.run(t.jti, t.deviceId, t.expiresAt, t.consumedAt ?? null, JSON.stringify(t));
            }
            break;
          }
        }
      }
    }),

    insertDevice: db.transaction((device: DeviceRecord, events: DeviceEvent[]): void => {
      if (s.getDeviceRevision.get(device.id) !== undefined) throw new StoreError('DEVICE_EXISTS');
      if (s.getDeviceIdByClaimCodeHash.get(device.claimCodeHash) !== undefined) {
        throw new StoreError('CLAIM_CODE_IN_USE');
      }
      s.insertDevice.run(deviceParams(device, device.revision));
      appendEvents(events);
    }),

    insertDevices: db.transaction((devices: readonly DeviceRecord[], events: DeviceEvent[]): void => {
      for (const device of devices) {
        if (s.getDeviceRevision.get(device.id) !== undefined) throw new StoreError('DEVICE_EXISTS', `device ${device.id} exists`, { details: { id: device.id } });
        if (s.getDeviceIdByClaimCodeHash.get(device.claimCodeHash) !== undefined) {
          throw new StoreError('CLAIM_CODE_IN_USE', `the claim code of ${device.id} is in use`, { details: { id: device.id } });
        }
        s.insertDevice.run(deviceParams(device, device.revision));
      }
      appendEvents(events);
    }),

    updateDevice: db.transaction(
      (device: DeviceRecord, expectedRevision: number, events: DeviceEvent[], extras: DeviceUpdateExtras): DeviceRecord => {
        // Checks first: nothing is written before all of them pass.
        checkRevision(device.id, expectedRevision);
        const certificates = (extras.certificates ?? []).map((change) => {
          const current = parse<CertificateRecord>(s.getCertificate.get(change.serial));
          if (current === undefined || current.deviceId !== device.id) {
            throw new StoreError('CERTIFICATE_NOT_FOUND', `no certificate ${change.serial} of device ${device.id}`);
          }
          return applyStatusChange(current, change);
        });
        checkConfigDocumentIsNew(extras.configDocument);

        // Writes (a repeated serial: the last change wins).
        for (const c of certificates) {
          s.setCertificateStatus.run({
            serial: c.serial,
            status: c.status,
            revokedAt: c.revokedAt ?? null,
            record: JSON.stringify(c),
          });
        }
        insertConfigDocument(extras.configDocument);
        const stored = writeDevice(device, expectedRevision);
        appendEvents(events);
        appendAudit(extras.audit ?? []);
        return stored;
      },
    ),

    commitIssuance: db.transaction((commit: IssuanceCommit): DeviceRecord => {
      const { device, expectedRevision, certificate, configDocument, consumeToken } = commit;

      // Checks, in the documented order; nothing is written before all of them pass.
      checkRevision(device.id, expectedRevision);
      let token: BootstrapTokenRecord | undefined;
      if (consumeToken !== undefined) {
        token = parse<BootstrapTokenRecord>(s.getToken.get(consumeToken.jti));
        if (token === undefined || token.deviceId !== device.id) throw new StoreError('TOKEN_NOT_FOUND');
        if (token.consumedAt !== undefined) throw new StoreError('TOKEN_USED');
      }
      if (s.getCertificate.get(certificate.serial) !== undefined) throw new StoreError('SERIAL_EXISTS');
      if (s.keyHeldByOtherDevice.get(certificate.keyFingerprint, device.id) !== undefined) {
        throw new StoreError('KEY_IN_USE');
      }
      checkConfigDocumentIsNew(configDocument);

      // Writes.
      if (token !== undefined && consumeToken !== undefined) {
        const consumed: BootstrapTokenRecord = {
          ...token,
          consumedAt: consumeToken.consumedAt,
          keyFingerprint: certificate.keyFingerprint,
          certificateSerial: certificate.serial,
        };
        s.consumeToken.run(consumeToken.consumedAt, JSON.stringify(consumed), consumed.jti);
      }
      const previous = commit.previousCertificates;
      if (previous?.status === 'revoked') {
        s.revokeActiveCertificates.run({
          deviceId: device.id,
          revokedAt: previous.revokedAt,
          revocationReason: previous.revocationReason,
        });
      } else {
        s.supersedeActiveCertificates.run(device.id);
      }
      // The new certificate is stored active, whatever the caller set (and so without revocation fields).
      const { revokedAt: _revokedAt, revocationReason: _reason, ...fresh } = certificate;
      s.insertCertificate.run(certificateParams({ ...fresh, status: 'active' }));
      insertConfigDocument(configDocument);
      const stored = writeDevice(device, expectedRevision);
      appendEvents(commit.events);
      appendAudit(commit.audit ?? []);
      return stored;
    }),

    appendAudit: db.transaction((entries: readonly AuditEntry[]): void => appendAudit(entries)),

    insertApiKey: db.transaction((key: ApiKeyRecord, audit: readonly AuditEntry[]): void => {
      s.insertApiKey.run(key.id, key.tenantId, JSON.stringify(key));
      appendAudit(audit);
    }),

    deleteApiKey: db.transaction((id: string, audit: readonly AuditEntry[]): boolean => {
      if (s.deleteApiKey.run(id).changes === 0) return false;
      appendAudit(audit);
      return true;
    }),

    insertProfileVersion: db.transaction((profile: ProfileRecord): void => {
      const { tenantId, id, version } = profile;
      if (s.profileVersionExists.get(tenantId, id, version) !== undefined) {
        throw new StoreError('PROFILE_VERSION_EXISTS');
      }
      if (version > 1 && s.profileVersionExists.get(tenantId, id, version - 1) === undefined) {
        throw new StoreError('PROFILE_VERSION_GAP', `profile ${id} has no version ${version - 1}`);
      }
      s.insertProfileVersion.run(tenantId, id, version, JSON.stringify(profile));
    }),
  };
}

type Transactions = ReturnType<typeof prepareTransactions>;

/** Applies the pending steps of sqlite-migrations.ts, each in its own BEGIN IMMEDIATE transaction. */
function migrate(db: Db): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`sqlite-migrations.ts: step ${i} has version ${m.version}, expected ${i + 1}`);
  });
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
  const latest = db.prepare<[], number | null>('SELECT MAX(version) FROM schema_migrations').pluck();
  const isApplied = db.prepare<[number], number>('SELECT 1 FROM schema_migrations WHERE version = ?').pluck();
  const record = db.prepare<[number, string]>('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)');

  const known = migrations.length;
  const current = latest.get() ?? 0;
  if (current > known) {
    throw new Error(`database schema version ${current} is newer than this provisiond supports (${known})`);
  }
  const apply = db.transaction((version: number, sql: string) => {
    // Re-checked under the write lock: another process may have applied it meanwhile.
    if (isApplied.get(version) !== undefined) return;
    db.exec(sql);
    record.run(version, new Date().toISOString());
  });
  for (const m of migrations) {
    if (m.version > current) apply.immediate(m.version, m.sql);
  }
}
