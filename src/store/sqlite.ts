/**
 * The SQLite backend of the Store (better-sqlite3, one file, WAL).
 *
 * better-sqlite3 is synchronous: every method runs to completion before the next one starts in
 * this process, so calls from one process never interleave. Across processes (or several
 * SqliteStore instances on one file) every multi-step operation runs in one BEGIN IMMEDIATE
 * transaction: the write lock is taken before the first read of a check, so a compare-and-set
 * cannot be overtaken between its check and its write. busy_timeout makes a second writer wait
 * for the lock instead of failing at once.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { StoreError } from './errors.js';
import { migrations } from './sqlite-migrations.js';
import type {
  ApiKeyRecord,
  BootstrapTokenRecord,
  CertificateRecord,
  ConfigDocumentRecord,
  DeviceQuery,
  DeviceRecord,
  IssuanceCommit,
  Store,
} from './types.js';
import type { Device, DeviceEvent } from '../../schemas/types.js';

const BUSY_TIMEOUT_MS = 5000;

type Db = Database.Database;
type DeviceState = Device['state'];

interface DeviceParams {
  id: string;
  claimCodeHash: string;
  state: string;
  model: string;
  revision: number;
  record: string;
}

function prepareStatements(db: Db) {
  const devCols = 'id, claim_code_hash, state, model, revision, record';
  return {
    getDevice: db.prepare<[string], string>('SELECT record FROM devices WHERE id = ?').pluck(),
    getDeviceRevision: db.prepare<[string], number>('SELECT revision FROM devices WHERE id = ?').pluck(),
    getDeviceByClaimCodeHash: db
      .prepare<[string], string>('SELECT record FROM devices WHERE claim_code_hash = ?')
      .pluck(),
    getDeviceIdByClaimCodeHash: db
      .prepare<[string], string>('SELECT id FROM devices WHERE claim_code_hash = ?')
      .pluck(),
    insertDevice: db.prepare<DeviceParams>(
      `INSERT INTO devices (${devCols}) VALUES (@id, @claimCodeHash, @state, @model, @revision, @record)`,
    ),
    updateDevice: db.prepare<DeviceParams & { expectedRevision: number }>(
      `UPDATE devices
          SET claim_code_hash = @claimCodeHash, state = @state, model = @model, revision = @revision, record = @record
        WHERE id = @id AND revision = @expectedRevision`,
    ),
    listDevices: db.prepare<[number], string>('SELECT record FROM devices ORDER BY id LIMIT ?').pluck(),
    listDevicesAfter: db
      .prepare<[string, number], string>('SELECT record FROM devices WHERE id > ? ORDER BY id LIMIT ?')
      .pluck(),
    listDevicesInState: db
      .prepare<[string, number], string>('SELECT record FROM devices WHERE state = ? ORDER BY id LIMIT ?')
      .pluck(),
    listDevicesInStateAfter: db
      .prepare<[string, string, number], string>(
        'SELECT record FROM devices WHERE state = ? AND id > ? ORDER BY id LIMIT ?',
      )
      .pluck(),
    countDevicesByState: db.prepare<[], { state: string; n: number }>(
      'SELECT state, COUNT(*) AS n FROM devices GROUP BY state',
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

    getCertificate: db.prepare<[string], string>('SELECT record FROM certificates WHERE serial = ?').pluck(),
    insertCertificate: db.prepare<[string, string, string, string, string, string]>(
      `INSERT INTO certificates (serial, device_id, key_fingerprint, status, issued_at, record)
       VALUES (?, ?, ?, ?, ?, ?)`,
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

    insertConfigDocument: db.prepare<[string, number, string]>(
      'INSERT INTO config_documents (device_id, version, record) VALUES (?, ?, ?)',
    ),
    getConfigDocument: db
      .prepare<[string, number], string>('SELECT record FROM config_documents WHERE device_id = ? AND version = ?')
      .pluck(),

    insertApiKey: db.prepare<[string, string]>('INSERT INTO api_keys (id, record) VALUES (?, ?)'),
    getApiKey: db.prepare<[string], string>('SELECT record FROM api_keys WHERE id = ?').pluck(),
    countApiKeys: db.prepare<[], number>('SELECT COUNT(*) FROM api_keys').pluck(),

    getMeta: db.prepare<[string], string>('SELECT value FROM meta WHERE key = ?').pluck(),
    setMeta: db.prepare<[string, string]>(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
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
    revision,
    record: JSON.stringify(stored),
  };
}

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

export class SqliteStore implements Store {
  readonly file: string;
  private db: Db | undefined;
  private stmts: Statements | undefined;
  private tx: Transactions | undefined;

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
      this.db = db;
    } catch (err) {
      db?.close();
      this.stmts = undefined;
      this.tx = undefined;
      unavailable('start', err);
    }
  }

  async stop(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    this.stmts = undefined;
    this.tx = undefined;
    if (db?.open) {
      try {
        db.close();
      } catch (err) {
        unavailable('stop', err);
      }
    }
  }

  async insertDevice(device: DeviceRecord, events: DeviceEvent[]): Promise<void> {
    const { tx } = this.open('insertDevice');
    try {
      tx.insertDevice.immediate(device, events);
    } catch (err) {
      constraint(err, { PRIMARYKEY: 'DEVICE_EXISTS', UNIQUE: 'CLAIM_CODE_IN_USE', FOREIGNKEY: 'DEVICE_NOT_FOUND' });
      unavailable('insertDevice', err);
    }
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
    return this.read('listDevices', (s) => {
      const { state, after } = query;
      const rows =
        state === undefined
          ? after === undefined
            ? s.listDevices.all(limit)
            : s.listDevicesAfter.all(after, limit)
          : after === undefined
            ? s.listDevicesInState.all(state, limit)
            : s.listDevicesInStateAfter.all(state, after, limit);
      return rows.map((json) => JSON.parse(json) as DeviceRecord);
    });
  }

  async countDevicesByState(): Promise<Partial<Record<DeviceState, number>>> {
    return this.read('countDevicesByState', (s) => {
      const counts: Partial<Record<DeviceState, number>> = {};
      for (const row of s.countDevicesByState.all()) counts[row.state as DeviceState] = row.n;
      return counts;
    });
  }

  async updateDevice(device: DeviceRecord, expectedRevision: number, events: DeviceEvent[]): Promise<DeviceRecord> {
    const { tx } = this.open('updateDevice');
    try {
      return tx.updateDevice.immediate(device, expectedRevision, events);
    } catch (err) {
      constraint(err, { UNIQUE: 'CLAIM_CODE_IN_USE', FOREIGNKEY: 'DEVICE_NOT_FOUND' });
      return unavailable('updateDevice', err);
    }
  }

  async listEvents(deviceId: string): Promise<DeviceEvent[]> {
    return this.read('listEvents', (s) => s.listEvents.all(deviceId).map((json) => JSON.parse(json) as DeviceEvent));
  }

  async insertBootstrapToken(token: BootstrapTokenRecord): Promise<void> {
    const { stmts } = this.open('insertBootstrapToken');
    try {
      stmts.insertToken.run(token.jti, token.deviceId, token.expiresAt, token.consumedAt ?? null, JSON.stringify(token));
    } catch (err) {
      constraint(err, { PRIMARYKEY: 'TOKEN_EXISTS', FOREIGNKEY: 'DEVICE_NOT_FOUND' });
      unavailable('insertBootstrapToken', err);
    }
  }

  async getBootstrapToken(jti: string): Promise<BootstrapTokenRecord | undefined> {
    return this.read('getBootstrapToken', (s) => parse<BootstrapTokenRecord>(s.getToken.get(jti)));
  }

  async commitIssuance(commit: IssuanceCommit): Promise<DeviceRecord> {
    const { tx } = this.open('commitIssuance');
    try {
      return tx.commitIssuance.immediate(commit);
    } catch (err) {
      // The explicit checks inside the transaction come first; these only catch what they cannot
      // (a claim code hash changed onto another device's). A config document version that already
      // exists has no documented code and surfaces as STORE_UNAVAILABLE.
      constraint(err, { UNIQUE: 'CLAIM_CODE_IN_USE', FOREIGNKEY: 'DEVICE_NOT_FOUND' });
      return unavailable('commitIssuance', err);
    }
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

  async getConfigDocument(deviceId: string, version: number): Promise<ConfigDocumentRecord | undefined> {
    return this.read('getConfigDocument', (s) => parse<ConfigDocumentRecord>(s.getConfigDocument.get(deviceId, version)));
  }

  async insertApiKey(key: ApiKeyRecord): Promise<void> {
    const { stmts } = this.open('insertApiKey');
    try {
      stmts.insertApiKey.run(key.id, JSON.stringify(key));
    } catch (err) {
      constraint(err, { PRIMARYKEY: 'API_KEY_EXISTS' });
      unavailable('insertApiKey', err);
    }
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | undefined> {
    return this.read('getApiKey', (s) => parse<ApiKeyRecord>(s.getApiKey.get(id)));
  }

  async countApiKeys(): Promise<number> {
    return this.read('countApiKeys', (s) => s.countApiKeys.get() ?? 0);
  }

  async getMeta(key: string): Promise<string | undefined> {
    return this.read('getMeta', (s) => s.getMeta.get(key));
  }

  async setMeta(key: string, value: string): Promise<void> {
    this.read('setMeta', (s) => s.setMeta.run(key, value));
  }

  // ---------------------------------------------------------------------------------------------

  private open(op: string): { stmts: Statements; tx: Transactions } {
    if (this.db === undefined || this.stmts === undefined || this.tx === undefined || !this.db.open) {
      throw new StoreError('STORE_UNAVAILABLE', `SQLite store: ${op}: the store is not started`);
    }
    return { stmts: this.stmts, tx: this.tx };
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

  /** The compare-and-set check; returns nothing, throws DEVICE_NOT_FOUND / REVISION_CONFLICT. */
  const checkRevision = (id: string, expectedRevision: number): void => {
    const revision = s.getDeviceRevision.get(id);
    if (revision === undefined) throw new StoreError('DEVICE_NOT_FOUND');
    if (revision !== expectedRevision) throw new StoreError('REVISION_CONFLICT');
  };

  const writeDevice = (device: DeviceRecord, expectedRevision: number): DeviceRecord => {
    const params = deviceParams(device, expectedRevision + 1);
    const { changes } = s.updateDevice.run({ ...params, expectedRevision });
    // Unreachable under the write lock taken by BEGIN IMMEDIATE; kept as a guard.
    if (changes !== 1) throw new StoreError('REVISION_CONFLICT');
    return JSON.parse(params.record) as DeviceRecord;
  };

  return {
    insertDevice: db.transaction((device: DeviceRecord, events: DeviceEvent[]): void => {
      if (s.getDeviceRevision.get(device.id) !== undefined) throw new StoreError('DEVICE_EXISTS');
      if (s.getDeviceIdByClaimCodeHash.get(device.claimCodeHash) !== undefined) {
        throw new StoreError('CLAIM_CODE_IN_USE');
      }
      s.insertDevice.run(deviceParams(device, device.revision));
      appendEvents(events);
    }),

    updateDevice: db.transaction(
      (device: DeviceRecord, expectedRevision: number, events: DeviceEvent[]): DeviceRecord => {
        checkRevision(device.id, expectedRevision);
        const stored = writeDevice(device, expectedRevision);
        appendEvents(events);
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
      s.supersedeActiveCertificates.run(device.id);
      const active: CertificateRecord = { ...certificate, status: 'active' };
      s.insertCertificate.run(
        active.serial,
        active.deviceId,
        active.keyFingerprint,
        active.status,
        active.issuedAt,
        JSON.stringify(active),
      );
      s.insertConfigDocument.run(configDocument.deviceId, configDocument.version, JSON.stringify(configDocument));
      const stored = writeDevice(device, expectedRevision);
      appendEvents(commit.events);
      return stored;
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
