/**
 * Schema migrations of the SQLite store, applied in order by SqliteStore.start(), each in its own
 * BEGIN IMMEDIATE transaction together with its row in `schema_migrations`.
 *
 * Rules: append new steps at the end with the next version number; never edit or reorder a step
 * that has shipped (databases in the field have already applied it).
 *
 * Layout: every table keeps the full record as JSON in `record` (the source of truth, returned
 * verbatim so records round-trip exactly); the other columns are copies of the fields the store
 * queries, checks or orders on, written in the same statement as `record`.
 */
export interface Migration {
  /** 1, 2, 3, ... in array order. */
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      CREATE TABLE devices (
        id              TEXT    NOT NULL PRIMARY KEY,
        claim_code_hash TEXT    NOT NULL UNIQUE,
        state           TEXT    NOT NULL,
        model           TEXT    NOT NULL,
        revision        INTEGER NOT NULL,
        record          TEXT    NOT NULL
      ) STRICT;
      CREATE INDEX devices_state_id ON devices (state, id);
      CREATE INDEX devices_model ON devices (model);

      CREATE TABLE device_events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id TEXT    NOT NULL REFERENCES devices (id),
        record    TEXT    NOT NULL
      ) STRICT;
      CREATE INDEX device_events_device_id ON device_events (device_id, id);

      CREATE TABLE bootstrap_tokens (
        jti         TEXT NOT NULL PRIMARY KEY,
        device_id   TEXT NOT NULL REFERENCES devices (id),
        expires_at  TEXT NOT NULL,
        consumed_at TEXT,
        record      TEXT NOT NULL
      ) STRICT;
      CREATE INDEX bootstrap_tokens_device_id ON bootstrap_tokens (device_id);

      CREATE TABLE certificates (
        serial          TEXT NOT NULL PRIMARY KEY,
        device_id       TEXT NOT NULL REFERENCES devices (id),
        key_fingerprint TEXT NOT NULL,
        status          TEXT NOT NULL,
        issued_at       TEXT NOT NULL,
        record          TEXT NOT NULL
      ) STRICT;
      CREATE INDEX certificates_device_id ON certificates (device_id, issued_at);
      CREATE INDEX certificates_key_fingerprint ON certificates (key_fingerprint);

      CREATE TABLE config_documents (
        device_id TEXT    NOT NULL REFERENCES devices (id),
        version   INTEGER NOT NULL,
        record    TEXT    NOT NULL,
        PRIMARY KEY (device_id, version)
      ) STRICT;

      CREATE TABLE api_keys (
        id     TEXT NOT NULL PRIMARY KEY,
        record TEXT NOT NULL
      ) STRICT;

      CREATE TABLE meta (
        key   TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 2,
    name: 'tenants, profile versions, device lifecycle columns, certificate revocation',
    // Rows written by step 1 predate tenants: they move to the service tenant 'default' (in the
    // JSON record, which stays the source of truth, and in the new column). ALTER TABLE ... ADD
    // COLUMN ... NOT NULL needs a default; every statement of sqlite.ts writes the column
    // explicitly, so the default only ever fills pre-existing rows.
    sql: `
      CREATE TABLE tenants (
        id     TEXT NOT NULL PRIMARY KEY,
        record TEXT NOT NULL
      ) STRICT;

      CREATE TABLE profile_versions (
        tenant_id TEXT    NOT NULL,
        id        TEXT    NOT NULL,
        version   INTEGER NOT NULL,
        record    TEXT    NOT NULL,
        PRIMARY KEY (tenant_id, id, version)
      ) STRICT;

      ALTER TABLE devices ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default';
      ALTER TABLE devices ADD COLUMN profile_id TEXT;
      ALTER TABLE devices ADD COLUMN deadline_at TEXT;
      ALTER TABLE devices ADD COLUMN provisional_until TEXT;
      UPDATE devices SET record = json_set(record, '$.tenantId', 'default')
       WHERE json_extract(record, '$.tenantId') IS NULL;
      UPDATE devices
         SET tenant_id         = json_extract(record, '$.tenantId'),
             profile_id        = json_extract(record, '$.profileId'),
             deadline_at       = json_extract(record, '$.deadlineAt'),
             provisional_until = json_extract(record, '$.provisionalUntil');
      CREATE INDEX devices_tenant_id ON devices (tenant_id, id);
      CREATE INDEX devices_tenant_state_id ON devices (tenant_id, state, id);
      CREATE INDEX devices_tenant_profile_id ON devices (tenant_id, profile_id, id) WHERE profile_id IS NOT NULL;
      CREATE INDEX devices_state_deadline_at ON devices (state, deadline_at) WHERE deadline_at IS NOT NULL;
      CREATE INDEX devices_state_provisional_until ON devices (state, provisional_until) WHERE provisional_until IS NOT NULL;

      ALTER TABLE certificates ADD COLUMN revoked_at TEXT;
      ALTER TABLE certificates ADD COLUMN not_after TEXT NOT NULL DEFAULT '';
      UPDATE certificates
         SET revoked_at = json_extract(record, '$.revokedAt'),
             not_after  = COALESCE(json_extract(record, '$.notAfter'), '');
      CREATE INDEX certificates_revoked ON certificates (revoked_at, serial) WHERE status = 'revoked';

      ALTER TABLE api_keys ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default';
      UPDATE api_keys SET record = json_set(record, '$.tenantId', 'default')
       WHERE json_extract(record, '$.tenantId') IS NULL;
      UPDATE api_keys SET tenant_id = json_extract(record, '$.tenantId');
      CREATE INDEX api_keys_tenant_id ON api_keys (tenant_id, id);
    `,
  },
  {
    version: 3,
    name: 'audit log (append-only); unconsumed bootstrap credentials by expiry',
    // seq orders the log (newest first = seq descending) and is the paging cursor. No foreign key
    // to devices: a refused claim may name a device that does not exist. The triggers make the
    // table append-only for every writer of the file, provisiond or not (a sqlite3 shell too):
    // UPDATE and DELETE are refused, and so is an INSERT naming an existing seq (INSERT OR
    // REPLACE would otherwise delete the old row without firing the DELETE trigger). DROP TABLE
    // is not a trigger event: archive the log elsewhere (docs/operations.md, "Audit log").
    sql: `
      CREATE TABLE audit_log (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        at        TEXT    NOT NULL,
        tenant_id TEXT    NOT NULL,
        device_id TEXT,
        action    TEXT    NOT NULL,
        outcome   TEXT    NOT NULL,
        record    TEXT    NOT NULL
      ) STRICT;
      CREATE INDEX audit_log_tenant_seq ON audit_log (tenant_id, seq);
      CREATE INDEX audit_log_device_seq ON audit_log (device_id, seq) WHERE device_id IS NOT NULL;
      CREATE INDEX audit_log_at ON audit_log (at);
      CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
      BEGIN
        SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be changed');
      END;
      CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
      BEGIN
        SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be deleted');
      END;
      CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log
      WHEN EXISTS (SELECT 1 FROM audit_log WHERE seq = NEW.seq)
      BEGIN
        SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be replaced');
      END;

      -- the sweep of expired, never used bootstrap credentials reads them in expiry order
      CREATE INDEX bootstrap_tokens_unconsumed_expiry ON bootstrap_tokens (expires_at, jti) WHERE consumed_at IS NULL;
    `,
  },
];
