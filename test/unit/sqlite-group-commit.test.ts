/**
 * Group commit of the SQLite store (src/store/sqlite-group-commit.ts) on real SQLite files: writes
 * issued together share one transaction, each keeps its own all-or-nothing, a lost batch rejects
 * every write in it, and nothing is answered before its COMMIT. The store-level behaviour (both
 * backends) is in the conformance suite: "writes of many devices issued together".
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GroupCommit } from '../../src/store/sqlite-group-commit.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { StoreError } from '../../src/store/errors.js';
import { makeDevice, makeEvent } from '../helpers/records.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'provisiond-group-commit-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

class BatchLost extends Error {}

/** A WAL database with a parent table and a child whose foreign key is checked at COMMIT. */
function openDb(file = join(dir, 'g.db')) {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = ON');
  db.exec(`CREATE TABLE IF NOT EXISTS parent (id TEXT PRIMARY KEY);
    CREATE TABLE IF NOT EXISTS child (id TEXT PRIMARY KEY, parent TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);`);
  const insertParent = db.prepare('INSERT INTO parent (id) VALUES (?)');
  const insertChild = db.prepare('INSERT INTO child (id, parent) VALUES (?, ?)');
  // two statements in one transaction function: nested in a batch, it runs in a savepoint
  const family = db.transaction((id: string, fail: boolean) => {
    insertParent.run(id);
    insertChild.run(`${id}-child`, id);
    if (fail) throw new Error(`family ${id} refused`);
  });
  const ids = (table: 'parent' | 'child') => (db.prepare(`SELECT id FROM ${table} ORDER BY id`).pluck().all() as string[]);
  return { db, insertParent, insertChild, family, ids };
}

describe('GroupCommit', () => {
  it('commits writes issued in one turn of the event loop together, and settles each only after the COMMIT', async () => {
    const { db, family, ids } = openDb();
    const group = new GroupCommit(db, (err) => new BatchLost(String(err)));
    // another connection sees nothing until the batch committed
    const reader = new Database(join(dir, 'g.db'), { readonly: true });
    let seenWhenSettled = -1;
    const writes = Array.from({ length: 25 }, (_, i) =>
      group.enqueue(() => {
        family.immediate(`p${String(i).padStart(2, '0')}`, false);
        return i;
      }),
    );
    expect(ids('parent')).toStrictEqual([]); // queued, not run
    void writes[0]!.then(() => {
      seenWhenSettled = reader.prepare('SELECT count(*) FROM parent').pluck().get() as number;
    });
    expect(await Promise.all(writes)).toStrictEqual(Array.from({ length: 25 }, (_, i) => i));
    expect(seenWhenSettled).toBe(25);
    expect(group.batches).toBe(1);
    expect(group.writes).toBe(25);
    expect(ids('child')).toHaveLength(25);
    reader.close();
    db.close();
  });

  it('rolls a failing write back alone (its savepoint); the others in the batch commit', async () => {
    const { db, family, insertParent, ids } = openDb();
    const group = new GroupCommit(db, (err) => new BatchLost(String(err)));
    const results = await Promise.allSettled([
      group.enqueue(() => family.immediate('a', false)),
      group.enqueue(() => family.immediate('b', true)), // throws after both of its inserts
      group.enqueue(() => insertParent.run('a')), // single statement: duplicate key
      group.enqueue(() => family.immediate('c', false)),
    ]);
    expect(results.map((r) => r.status)).toStrictEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toContain('family b refused');
    expect((results[2] as PromiseRejectedResult).reason).toMatchObject({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    expect(group.batches).toBe(1);
    expect(ids('parent')).toStrictEqual(['a', 'c']);
    expect(ids('child')).toStrictEqual(['a-child', 'c-child']);
    expect(db.inTransaction).toBe(false);
    db.close();
  });

  it('when the COMMIT fails, every write of the batch is rejected and none of them is stored', async () => {
    const { db, family, insertChild, ids } = openDb();
    const group = new GroupCommit(db, (err) => new BatchLost(String(err)));
    const results = await Promise.allSettled([
      group.enqueue(() => family.immediate('x', false)),
      // an orphan child: its deferred foreign key fails the COMMIT, not the statement
      group.enqueue(() => insertChild.run('orphan', 'nobody')),
      group.enqueue(() => family.immediate('y', true)),
    ]);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    expect((results[0] as PromiseRejectedResult).reason).toBeInstanceOf(BatchLost);
    expect(String((results[0] as PromiseRejectedResult).reason)).toContain('FOREIGN KEY');
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(BatchLost);
    // a write that had failed on its own keeps its own error
    expect(String((results[2] as PromiseRejectedResult).reason)).toContain('family y refused');
    expect(ids('parent')).toStrictEqual([]);
    expect(ids('child')).toStrictEqual([]);
    expect(db.inTransaction).toBe(false);
    // the next batch works
    await group.enqueue(() => family.immediate('z', false));
    expect(ids('parent')).toStrictEqual(['z']);
    db.close();
  });

  it('when SQLite ends the transaction in the middle of a batch, the writes before are rejected and the ones after never run', async () => {
    const { db, family, ids } = openDb();
    const group = new GroupCommit(db, (err) => new BatchLost(String(err)));
    let ranAfter = false;
    const results = await Promise.allSettled([
      group.enqueue(() => family.immediate('first', false)),
      // stands in for an I/O error or a full disk, after which SQLite rolls the transaction back
      group.enqueue(() => db.prepare('ROLLBACK').run()),
      group.enqueue(() => {
        ranAfter = true;
        family.immediate('after', false);
      }),
    ]);
    expect(ranAfter).toBe(false);
    expect(results.map((r) => r.status)).toStrictEqual(['rejected', 'rejected', 'rejected']);
    for (const r of results) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(BatchLost);
    expect(ids('parent')).toStrictEqual([]);
    db.close();
  });

  it('a lone write runs in its own transaction, as without grouping', async () => {
    const { db, family, ids } = openDb();
    const group = new GroupCommit(db, (err) => new BatchLost(String(err)));
    await expect(group.enqueue(() => family.immediate('solo', true))).rejects.toThrow('family solo refused');
    await group.enqueue(() => family.immediate('solo', false));
    expect(ids('child')).toStrictEqual(['solo-child']);
    expect(group.batches).toBe(2);
    db.close();
  });
});

describe('SqliteStore with group commit', () => {
  it('stop() commits and answers what is queued before it closes the database', async () => {
    const file = join(dir, 'store.db');
    const store = new SqliteStore({ file });
    await store.start();
    const devices = Array.from({ length: 5 }, () => makeDevice());
    const writes = devices.map((d) => store.insertDevice(d, [makeEvent(d.id, { type: 'registered', to: 'registered' })]));
    await store.stop();
    await Promise.all(writes);
    const again = new SqliteStore({ file });
    await again.start();
    for (const d of devices) expect((await again.getDevice(d.id))?.id).toBe(d.id);
    // a write after stop() is refused with a code, not queued
    await expect(store.insertDevice(makeDevice(), [])).rejects.toSatisfy((e) => e instanceof StoreError && e.code === 'STORE_UNAVAILABLE');
    await again.stop();
  });
});
