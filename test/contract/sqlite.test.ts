import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createStore, SqliteStore, StoreError } from '../../src/store/index.js';
import { migrations } from '../../src/store/sqlite-migrations.js';
import type { DeviceRecord } from '../../src/store/index.js';
import type { NetworkSettings } from '../../schemas/types.js';
import {
  makeApiKey,
  makeAudit,
  makeBootstrapToken,
  makeCertificate,
  makeConfigDocument,
  makeDevice,
  makeEvent,
  makeIssuanceCommit,
  ts,
} from '../helpers/records.js';
import { expectStoreError, reopenableHarness, storeConformance } from './store.contract.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'provisiond-store-'));
}

function mode(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

storeConformance('sqlite', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'state.db');
  let fresh = 0;
  return reopenableHarness(
    () => new SqliteStore({ file }),
    () => fs.rmSync(dir, { recursive: true, force: true }),
    // a new file in the same directory: removed with it
    () => ({ store: new SqliteStore({ file: path.join(dir, `fresh-${++fresh}.db`) }), wipe: () => {} }),
  );
});

describe('SqliteStore specifics', () => {
  let dir: string;
  const stores: SqliteStore[] = [];

  async function started(file: string): Promise<SqliteStore> {
    const store = new SqliteStore({ file });
    stores.push(store);
    await store.start();
    return store;
  }

  beforeEach(() => {
    dir = tempDir();
  });

  afterEach(async () => {
    for (const s of stores.splice(0)) await s.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the constructor only assigns: no file until start()', () => {
    const file = path.join(dir, 'lazy.db');
    new SqliteStore({ file });
    expect(fs.existsSync(file)).toBe(false);
  });

  it('creates missing directories and the file with mode 0600 (WAL and SHM files too)', async () => {
    const file = path.join(dir, 'a', 'b', 'state.db');
    const store = await started(file);
    await store.insertDevice(makeDevice(), []);
    expect(mode(file)).toBe(0o600);
    expect(mode(`${file}-wal`)).toBe(0o600);
    expect(mode(`${file}-shm`)).toBe(0o600);
    expect(mode(path.join(dir, 'a', 'b')) & 0o077).toBe(0);
  });

  it('puts the database in WAL mode and enforces foreign keys', async () => {
    const file = path.join(dir, 'state.db');
    const store = await started(file);
    const peek = new Database(file, { readonly: true });
    try {
      expect(peek.pragma('journal_mode', { simple: true })).toBe('wal');
    } finally {
      peek.close();
    }
    // foreign_keys=ON: a token for a device that does not exist is refused.
    await expectStoreError(store.insertBootstrapToken(makeBootstrapToken('no-such-device')), 'DEVICE_NOT_FOUND');
  });

  it('records migrations once; start() on an existing file applies nothing new', async () => {
    const file = path.join(dir, 'state.db');
    const first = await started(file);
    await first.setMeta('k', 'v');
    await first.stop();

    const read = () => {
      const db = new Database(file, { readonly: true });
      try {
        return db.prepare('SELECT version, applied_at FROM schema_migrations ORDER BY version').all() as {
          version: number;
          applied_at: string;
        }[];
      } finally {
        db.close();
      }
    };
    const rows = read();
    expect(rows.map((r) => r.version)).toStrictEqual(migrations.map((m) => m.version));
    expect(migrations.map((m) => m.version)).toStrictEqual(migrations.map((_, i) => i + 1));
    for (const r of rows) expect(new Date(r.applied_at).toISOString()).toBe(r.applied_at);

    const second = await started(file);
    expect(read()).toStrictEqual(rows);
    expect(await second.getMeta('k')).toBe('v');
  });

  /** A device record of the step-1 era: no tenantId, the claim's network settings in claimNetwork. */
  type Step1Device = Omit<DeviceRecord, 'tenantId' | 'network'> & { claimNetwork?: NetworkSettings };

  /**
   * A database as provisiond wrote it with only migration step 1 (the statements of the step-1
   * store): records without tenantId, a device with the old claimNetwork field.
   */
  function createStep1Database(file: string) {
    const step1 = migrations[0];
    if (step1?.version !== 1) throw new Error('migration step 1 missing');
    const strip = <T extends { tenantId?: string }>(r: T): Omit<T, 'tenantId'> => {
      const { tenantId: _t, ...rest } = r;
      return rest;
    };
    const claimed: Step1Device = {
      ...strip(makeDevice({ state: 'identity_issued', owner: 'Acme', site: 'HQ', claimedAt: ts(1000), revision: 4 })),
      claimNetwork: { wifi: { ssid: 'acme', security: 'wpa2-psk', secret: 'correct horse battery staple' } },
      config: { version: 1, items: [{ id: 'network', required: true, status: 'pending' }] },
    };
    const registered = strip(makeDevice({ id: 'z-registered' }));
    const events = [
      makeEvent(claimed.id, { type: 'registered', to: 'registered' }),
      makeEvent(claimed.id, { type: 'claimed', from: 'registered', to: 'claimed', actor: 'apikey:k1' }),
    ];
    const superseded = makeCertificate(claimed.id, { status: 'superseded', issuedAt: ts(2000) });
    const revoked = makeCertificate(claimed.id, {
      status: 'revoked',
      issuedAt: ts(2500),
      revokedAt: ts(2600),
      revocationReason: 'keyCompromise',
    });
    const active = makeCertificate(claimed.id, { issuedAt: ts(3000) });
    claimed.certificateSerial = active.serial;
    const token = {
      ...makeBootstrapToken(claimed.id),
      consumedAt: ts(3000),
      keyFingerprint: active.keyFingerprint,
      certificateSerial: active.serial,
    };
    const doc = makeConfigDocument(claimed.id, 1);
    const apiKey = strip(makeApiKey());

    const db = new Database(file);
    try {
      db.pragma('journal_mode = WAL');
      db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
      db.exec(step1.sql);
      db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (1, ?)').run(ts());
      const insertDevice = db.prepare(
        'INSERT INTO devices (id, claim_code_hash, state, model, revision, record) VALUES (?, ?, ?, ?, ?, ?)',
      );
      for (const d of [claimed, registered]) {
        insertDevice.run(d.id, d.claimCodeHash, d.state, d.model, d.revision, JSON.stringify(d));
      }
      const insertEvent = db.prepare('INSERT INTO device_events (device_id, record) VALUES (?, ?)');
      for (const e of events) insertEvent.run(e.deviceId, JSON.stringify(e));
      db.prepare(
        'INSERT INTO bootstrap_tokens (jti, device_id, expires_at, consumed_at, record) VALUES (?, ?, ?, ?, ?)',
      ).run(token.jti, token.deviceId, token.expiresAt, token.consumedAt, JSON.stringify(token));
      const insertCertificate = db.prepare(
        'INSERT INTO certificates (serial, device_id, key_fingerprint, status, issued_at, record) VALUES (?, ?, ?, ?, ?, ?)',
      );
      for (const c of [superseded, revoked, active]) {
        insertCertificate.run(c.serial, c.deviceId, c.keyFingerprint, c.status, c.issuedAt, JSON.stringify(c));
      }
      db.prepare('INSERT INTO config_documents (device_id, version, record) VALUES (?, ?, ?)').run(
        doc.deviceId,
        doc.version,
        JSON.stringify(doc),
      );
      db.prepare('INSERT INTO api_keys (id, record) VALUES (?, ?)').run(apiKey.id, JSON.stringify(apiKey));
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('ca.generatedAt', ts());
    } finally {
      db.close();
    }
    return { claimed, registered, events, certificates: { superseded, revoked, active }, token, doc, apiKey };
  }

  it('upgrades a database created at step 1: rows keep their data, tenant_id is backfilled to default', async () => {
    const file = path.join(dir, 'state.db');
    const old = createStep1Database(file);
    const store = await started(file);

    // what the current store returns: the step-1 record plus tenantId (claimNetwork is kept as it was)
    const claimed = { ...old.claimed, tenantId: 'default' } as DeviceRecord;
    const registered: DeviceRecord = { ...old.registered, tenantId: 'default' };
    expect(await store.getDevice(claimed.id)).toStrictEqual(claimed);
    expect(await store.getDevice(registered.id)).toStrictEqual(registered);
    expect(await store.findDeviceByClaimCodeHash(claimed.claimCodeHash)).toStrictEqual(claimed);
    expect(await store.listDevices({ tenantId: 'default', limit: 10 })).toStrictEqual(
      [claimed, registered].sort((a, b) => (a.id < b.id ? -1 : 1)),
    );
    expect(await store.listDevices({ tenantId: 'default', states: ['identity_issued'], limit: 10 })).toStrictEqual([claimed]);
    expect(await store.countDevicesByState('default')).toStrictEqual({ identity_issued: 1, registered: 1 });
    expect(await store.listEvents(claimed.id)).toStrictEqual(old.events);
    expect(await store.getBootstrapToken(old.token.jti)).toStrictEqual(old.token);
    const { superseded, revoked, active } = old.certificates;
    expect(await store.listCertificates(claimed.id)).toStrictEqual([active, revoked, superseded]);
    expect(await store.findCertificateByKey(revoked.keyFingerprint)).toStrictEqual(revoked);
    expect(await store.listRevokedCertificates(ts(0))).toStrictEqual([revoked]);
    expect(await store.listRevokedCertificates(revoked.notAfter)).toStrictEqual([]);
    expect(await store.getConfigDocument(claimed.id, 1)).toStrictEqual(old.doc);
    const apiKey = { ...old.apiKey, tenantId: 'default' };
    expect(await store.getApiKey(apiKey.id)).toStrictEqual(apiKey);
    expect(await store.listApiKeys('default')).toStrictEqual([apiKey]);
    expect(await store.getMeta('ca.generatedAt')).toBe(ts());

    const peek = new Database(file, { readonly: true });
    try {
      expect(peek.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all()).toStrictEqual(
        migrations.map((m) => m.version),
      );
      expect(peek.prepare('SELECT DISTINCT tenant_id FROM devices').pluck().all()).toStrictEqual(['default']);
      expect(peek.prepare('SELECT DISTINCT tenant_id FROM api_keys').pluck().all()).toStrictEqual(['default']);
      expect(peek.prepare('SELECT revoked_at FROM certificates WHERE serial = ?').pluck().get(revoked.serial)).toBe(
        revoked.revokedAt,
      );
    } finally {
      peek.close();
    }

    // and the upgraded rows take part in the new operations
    const renewed = await store.commitIssuance(
      makeIssuanceCommit(claimed, {
        renewal: true,
        at: ts(9000),
        previousCertificates: { status: 'revoked', revokedAt: ts(9000), revocationReason: 'superseded' },
      }),
    );
    expect(renewed.revision).toBe(claimed.revision + 1);
    expect((await store.listRevokedCertificates(ts(0))).map((c) => c.serial)).toStrictEqual([revoked.serial, active.serial]);
    await store.updateDevice({ ...registered, tenantId: 'acme' }, registered.revision, []);
    expect(await store.countDevicesByState('acme')).toStrictEqual({ registered: 1 });
  });

  it('a failing migration step is rolled back as a whole: the database stays at step 1', async () => {
    const file = path.join(dir, 'state.db');
    const old = createStep1Database(file);
    // step 2 creates `tenants`; an existing table of that name makes it fail half-way
    const db = new Database(file);
    db.exec('CREATE TABLE tenants (x TEXT)');
    db.close();
    await expectStoreError(new SqliteStore({ file }).start(), 'STORE_UNAVAILABLE');
    const peek = new Database(file, { readonly: true });
    try {
      expect(peek.prepare('SELECT version FROM schema_migrations').pluck().all()).toStrictEqual([1]);
      const columns = peek.prepare("SELECT name FROM pragma_table_info('devices')").pluck().all();
      expect(columns).not.toContain('tenant_id');
      expect(peek.prepare('SELECT record FROM devices WHERE id = ?').pluck().get(old.claimed.id)).toBe(
        JSON.stringify(old.claimed),
      );
    } finally {
      peek.close();
    }
  });

  it('refuses a database migrated by a newer provisiond', async () => {
    const file = path.join(dir, 'state.db');
    await (await started(file)).stop();
    const db = new Database(file);
    db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(migrations.length + 1, 'x');
    db.close();
    const err = await expectStoreError(new SqliteStore({ file }).start(), 'STORE_UNAVAILABLE');
    expect(String(err.message)).toMatch(/newer/);
  });

  it('wraps driver failures as STORE_UNAVAILABLE with the cause', async () => {
    const notAFile = path.join(dir, 'is-a-directory');
    fs.mkdirSync(notAFile);
    const err = await expectStoreError(new SqliteStore({ file: notAFile }).start(), 'STORE_UNAVAILABLE');
    expect(err.cause).toBeInstanceOf(Error);
  });

  it('start() on a started store is a no-op; a stopped store can be started again', async () => {
    const file = path.join(dir, 'state.db');
    const store = await started(file);
    await store.start();
    await store.setMeta('k', '1');
    await store.stop();
    await store.start();
    expect(await store.getMeta('k')).toBe('1');
  });

  it('two instances on one file see each other and CAS across them has exactly one winner', async () => {
    const file = path.join(dir, 'state.db');
    const a = await started(file);
    const b = await started(file);
    const device = makeDevice();
    await a.insertDevice(device, [makeEvent(device.id)]);
    expect(await b.getDevice(device.id)).toStrictEqual(device);

    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 ? a : b).updateDevice({ ...device, owner: `o${i}` }, device.revision, [makeEvent(device.id)]),
      ),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const rejected = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    expect(rejected.every((e) => e instanceof StoreError && e.code === 'REVISION_CONFLICT')).toBe(true);
    expect(await a.getDevice(device.id)).toStrictEqual(await b.getDevice(device.id));
    expect(await b.listEvents(device.id)).toHaveLength(2);
  });

  it('separate processes doing CAS updates and issuance commits on one device lose nothing and never hit SQLITE_BUSY', async () => {
    const file = path.join(dir, 'state.db');
    const store = await started(file);
    const device = makeDevice({ state: 'claimed' });
    await store.insertDevice(device, []);

    const workers = 4;
    const perWorker = 100;
    // Each worker opens the store, says "ready", waits for "go" (so that all of them run at once),
    // then does read-modify-write steps, alternately updateDevice and commitIssuance (renewal),
    // retrying each on REVISION_CONFLICT.
    const url = (rel: string) => JSON.stringify(pathToFileURL(path.join(repoRoot, rel)).href);
    const script = path.join(dir, 'worker.mts');
    fs.writeFileSync(
      script,
      `
      import { SqliteStore } from ${url('src/store/sqlite.ts')};
      import { makeIssuanceCommit } from ${url('test/helpers/records.ts')};
      const [file, id, n] = process.argv.slice(2);
      const store = new SqliteStore({ file });
      await store.start();
      process.stdout.write('ready\\n');
      await new Promise((resolve) => process.stdin.once('data', resolve));
      let done = 0, conflicts = 0;
      while (done < Number(n)) {
        const d = await store.getDevice(id);
        const at = new Date().toISOString();
        try {
          if (done % 2 === 0) {
            await store.updateDevice({ ...d, updatedAt: at }, d.revision,
              [{ deviceId: id, at, type: 'config_delivered', actor: 'system', reason: String(process.pid) }]);
          } else {
            await store.commitIssuance(makeIssuanceCommit(d, { at }));
          }
          done++;
        } catch (e) {
          if (e.code !== 'REVISION_CONFLICT') { console.error(e); process.exit(2); }
          conflicts++;
        }
      }
      await store.stop();
      process.stdout.write(JSON.stringify({ done, conflicts }) + '\\n');
      process.stdin.destroy();
      `,
    );

    type Outcome = { done: number; conflicts: number };
    const children = Array.from({ length: workers }, () => {
      const child = spawn(process.execPath, ['--import', 'tsx', script, file, device.id, String(perWorker)], {
        cwd: repoRoot,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      let onReady: () => void = () => {};
      const ready = new Promise<void>((resolve) => (onReady = resolve));
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.startsWith('ready\n')) onReady();
      });
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      child.stdin.on('error', () => {}); // EPIPE from a worker that already died; reported via `finished`
      const finished = new Promise<Outcome>((resolve, reject) => {
        child.on('error', reject);
        child.on('close', (code) => {
          if (code !== 0) return reject(new Error(`worker exited ${code}: ${err}`));
          resolve(JSON.parse(out.slice('ready\n'.length)) as Outcome);
        });
      });
      finished.catch(() => onReady()); // a worker that dies before "ready" must not hang the barrier
      return { child, ready, finished };
    });
    await Promise.all(children.map((c) => c.ready));
    for (const c of children) c.child.stdin.write('go\n');
    const results = await Promise.all(children.map((c) => c.finished));

    expect(results.map((r) => r.done)).toStrictEqual(Array(workers).fill(perWorker));
    // The workers did run against each other (otherwise this test proves nothing).
    expect(results.reduce((n, r) => n + r.conflicts, 0)).toBeGreaterThan(0);
    const total = workers * perWorker;
    const stored = await store.getDevice(device.id);
    expect(stored?.revision).toBe(1 + total);
    // updates append one event, commits two (makeIssuanceCommit)
    expect(await store.listEvents(device.id)).toHaveLength(total / 2 + total);
    const certificates = await store.listCertificates(device.id);
    expect(certificates).toHaveLength(total / 2);
    expect(certificates.filter((c) => c.status === 'active').map((c) => c.serial)).toStrictEqual([
      stored?.certificateSerial,
    ]);
    expect(stored?.config?.version).toBe(total / 2);
    expect(await store.getConfigDocument(device.id, total / 2)).toBeDefined();
  });

  it('the audit log is append-only in the file itself: triggers refuse UPDATE and DELETE from any writer', async () => {
    const file = path.join(dir, 'state.db');
    const store = await started(file);
    const entries = [makeAudit(), makeAudit({ outcome: 'failure', errorCode: 'CLAIM_CODE_INVALID' })];
    await store.appendAudit(entries);
    // another writer on the file (a sqlite3 shell, a script): every change is refused by SQLite
    const db = new Database(file);
    try {
      const refused = (sql: string) => {
        try {
          db.exec(sql);
        } catch (err) {
          return (err as Error).message;
        }
        return 'ran';
      };
      expect(refused(`UPDATE audit_log SET outcome = 'success'`)).toMatch(/append-only: entries cannot be changed/);
      expect(refused(`UPDATE audit_log SET record = '{}' WHERE seq = 1`)).toMatch(/append-only/);
      expect(refused('DELETE FROM audit_log')).toMatch(/append-only: entries cannot be deleted/);
      expect(refused('DELETE FROM audit_log WHERE seq = 2')).toMatch(/append-only/);
      expect(refused(`INSERT OR REPLACE INTO audit_log (seq, at, tenant_id, action, outcome, record) VALUES (1, 'x', 'x', 'x', 'x', '{}')`)).toMatch(/append-only/);
      const triggers = db.prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log' ORDER BY name").pluck().all();
      expect(triggers).toStrictEqual(['audit_log_no_delete', 'audit_log_no_replace', 'audit_log_no_update']);
    } finally {
      db.close();
    }
    expect((await store.listAudit({ limit: 10 })).entries).toStrictEqual([...entries].reverse());
  });

  it('upgrades a step-2 database to the audit log (step 3) without touching its rows', async () => {
    const file = path.join(dir, 'state.db');
    const db = new Database(file);
    db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
    for (const m of migrations.filter((m) => m.version <= 2)) {
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(m.version, ts());
    }
    db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('k', 'v');
    db.close();
    const store = await started(file);
    expect(await store.getMeta('k')).toBe('v');
    expect((await store.countEntries()).auditEntries).toBe(0);
    const entry = makeAudit();
    await store.appendAudit([entry]);
    expect((await store.listAudit({ limit: 1 })).entries).toStrictEqual([entry]);
  });

  it('listDevices with a non-positive limit returns an empty page (SQLite reads LIMIT -1 as unlimited)', async () => {
    const store = await started(path.join(dir, 'state.db'));
    await store.insertDevice(makeDevice(), []);
    expect(await store.listDevices({ limit: -1 })).toStrictEqual([]);
    expect(await store.listDevices({ limit: 0 })).toStrictEqual([]);
  });

  it('createStore builds an unstarted SqliteStore', async () => {
    const file = path.join(dir, 'factory.db');
    const store = createStore({ kind: 'sqlite', file });
    expect(store).toBeInstanceOf(SqliteStore);
    expect(fs.existsSync(file)).toBe(false);
    await store.start();
    await store.setMeta('k', 'v');
    expect(await store.getMeta('k')).toBe('v');
    await store.stop();
  });
});
