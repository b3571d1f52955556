/**
 * Group commit for the SQLite store: the writes that arrive while the event loop is busy (one
 * pass over the network callbacks, say) are committed together, in one BEGIN IMMEDIATE ...
 * COMMIT, instead of one transaction each.
 *
 * A commit writes every page it touched to the WAL: the device row, its indexes, the event and
 * audit tables. Devices provisioned side by side share most of those pages (index leaves, table
 * tails), so one commit for the writes of many devices writes each shared page once. Nothing is
 * answered early: every write's promise settles after the COMMIT that contains it (or the
 * rollback that undid it), so a caller that got an answer has its write on disk exactly as with
 * one transaction per write (synchronous = NORMAL, WAL).
 *
 * Each write keeps its own all-or-nothing: it runs in its own SAVEPOINT (better-sqlite3 turns a
 * transaction function called inside a transaction into one), so a write that fails (a revision
 * conflict, a constraint) is rolled back alone and the others commit. A write that runs no
 * transaction function is a single statement, which SQLite undoes by itself when it fails. When
 * the whole batch is lost (the COMMIT fails, or SQLite rolled the transaction back after an I/O
 * error), every write that had succeeded in it is rejected with STORE_UNAVAILABLE.
 *
 * A lone write runs as before, in its own transaction. Reads are not queued: they see what is
 * committed, as a read that raced the write would have.
 */
import type Database from 'better-sqlite3';

interface Job {
  run: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; err: unknown };

export class GroupCommit {
  readonly #db: Database.Database;
  /** Turns the error that ended a batch into the error each of its writes is rejected with. */
  readonly #batchFailed: (err: unknown) => unknown;
  readonly #begin: Database.Statement;
  readonly #commit: Database.Statement;
  readonly #rollback: Database.Statement;
  #queue: Job[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  /** Writes committed together so far and the batches they took (for the metrics and the tests). */
  writes = 0;
  batches = 0;

  constructor(db: Database.Database, batchFailed: (err: unknown) => unknown) {
    this.#db = db;
    this.#batchFailed = batchFailed;
    this.#begin = db.prepare('BEGIN IMMEDIATE');
    this.#commit = db.prepare('COMMIT');
    this.#rollback = db.prepare('ROLLBACK');
  }

  /**
   * Queues `run` (synchronous; it may call better-sqlite3 transaction functions and must map its
   * own errors) for the next batch, committed once the current turn of the event loop is over.
   */
  enqueue<T>(run: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ run, resolve: resolve as (value: unknown) => void, reject });
      this.#scheduled ??= setImmediate(() => this.flush());
    });
  }

  /** Commits what is queued now (stop() calls it before closing the database). */
  flush(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const jobs = this.#queue;
    this.#queue = [];
    if (jobs.length === 0) return;
    const outcomes = jobs.length === 1 ? [attempt(jobs[0]!)] : this.#batch(jobs);
    this.writes += jobs.length;
    this.batches += 1;
    for (let i = 0; i < jobs.length; i++) {
      const outcome = outcomes[i]!;
      if (outcome.ok) jobs[i]!.resolve(outcome.value);
      else jobs[i]!.reject(outcome.err);
    }
  }

  #batch(jobs: Job[]): Outcome[] {
    const db = this.#db;
    try {
      this.#begin.run();
    } catch (err) {
      const failed = this.#batchFailed(err);
      return jobs.map(() => ({ ok: false, err: failed }));
    }
    const outcomes: Outcome[] = [];
    let lost: { err: unknown } | undefined;
    for (const job of jobs) {
      if (lost) {
        outcomes.push({ ok: false, err: this.#batchFailed(lost.err) });
        continue;
      }
      outcomes.push(attempt(job));
      // An I/O error or a full disk can make SQLite roll the whole transaction back: what ran
      // before is gone, and what follows must not run outside a transaction.
      if (!db.inTransaction) lost = { err: new Error('SQLite rolled the group transaction back') };
    }
    if (!lost) {
      try {
        this.#commit.run();
        return outcomes;
      } catch (err) {
        lost = { err };
        if (db.inTransaction) {
          try {
            this.#rollback.run();
          } catch {
            // the connection reports the failure on its next use
          }
        }
      }
    }
    const failed = this.#batchFailed(lost.err);
    // writes that failed on their own keep their error (they changed nothing); the others are lost
    return outcomes.map((o) => (o.ok ? { ok: false, err: failed } : o));
  }
}

function attempt(job: Job): Outcome {
  try {
    return { ok: true, value: job.run() };
  } catch (err) {
    return { ok: false, err };
  }
}
