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
];
