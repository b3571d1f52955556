/**
 * Moving a whole store into another one (SQLite to Redis, Redis to SQLite, or between two stores
 * of one kind): `provisiond store copy` (src/cli/main.ts) runs copyStore().
 *
 * The copy streams the source's exportEntries() into the target's importEntries() in batches,
 * then verifies it: the counts of both stores per kind, and a digest of each (SHA-256 over the
 * canonical JSON of every exported entry, in export order; the export order depends only on the
 * data, so equal stores have equal digests whatever their backends). Run it with the service
 * stopped: a store that changes during the copy makes the verification fail.
 */
import { createHash } from 'node:crypto';
import { StoreError } from './errors.js';
import type { Store, StoreCounts, StoreEntry } from './types.js';

/** The kinds of StoreCounts, in the order they are reported. */
export const COUNT_KINDS = [
  'tenants',
  'profileVersions',
  'apiKeys',
  'meta',
  'devices',
  'events',
  'certificates',
  'configDocuments',
  'bootstrapTokens',
  'auditEntries',
] as const satisfies readonly (keyof StoreCounts)[];

export const DEFAULT_BATCH_SIZE = 500;

export function emptyCounts(): StoreCounts {
  return { tenants: 0, profileVersions: 0, apiKeys: 0, meta: 0, devices: 0, events: 0, certificates: 0, configDocuments: 0, bootstrapTokens: 0, auditEntries: 0 };
}

/** Adds what `entry` holds to `counts`. */
export function countEntry(counts: StoreCounts, entry: StoreEntry): void {
  switch (entry.kind) {
    case 'tenant':
      counts.tenants += 1;
      break;
    case 'profileVersion':
      counts.profileVersions += 1;
      break;
    case 'apiKey':
      counts.apiKeys += 1;
      break;
    case 'meta':
      counts.meta += 1;
      break;
    case 'device':
      counts.devices += 1;
      counts.events += entry.events.length;
      counts.certificates += entry.certificates.length;
      counts.configDocuments += entry.configDocuments.length;
      counts.bootstrapTokens += entry.bootstrapTokens.length;
      break;
    case 'audit':
      counts.auditEntries += 1;
      break;
  }
}

/** `tenants=1 profileVersions=2 ...`, every kind in COUNT_KINDS order. */
export function formatCounts(counts: StoreCounts): string {
  return COUNT_KINDS.map((k) => `${k}=${counts[k]}`).join(' ');
}

/** The kinds whose counts differ, as `kind: <aName> N, <bName> M`. */
export function countDifferences(a: StoreCounts, b: StoreCounts, aName: string, bName: string): string[] {
  return COUNT_KINDS.filter((k) => a[k] !== b[k]).map((k) => `${k}: ${aName} ${a[k]}, ${bName} ${b[k]}`);
}

/** JSON with the keys of every object sorted (and undefined members left out): one text per value. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

/** Accumulates the digest of a stream of entries. */
class EntryDigest {
  private readonly hash = createHash('sha256');
  readonly counts = emptyCounts();

  add(entry: StoreEntry): void {
    this.hash.update(canonicalJson(entry));
    this.hash.update('\n');
    countEntry(this.counts, entry);
  }

  /** `sha256:<hex>`; call once. */
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/** The digest of everything `store` exports, and the counts of what it exported. */
export async function digestStore(store: Store): Promise<{ digest: string; counts: StoreCounts }> {
  const d = new EntryDigest();
  for await (const entry of store.exportEntries()) d.add(entry);
  return { digest: d.digest(), counts: d.counts };
}

export interface CopyProgress {
  /** What has been written to the target so far. */
  copied: StoreCounts;
  /** The source's counts before the copy started. */
  total: StoreCounts;
}

export interface CopyOptions {
  /** Entries per importEntries() call (one transaction / one script). Default 500. */
  batchSize?: number;
  /** Called after every batch written. */
  onProgress?: (progress: CopyProgress) => void;
}

export interface CopyResult {
  /** The counts of the target after the copy (equal to the source's). */
  counts: StoreCounts;
  /** The digest of both stores (equal). */
  digest: string;
}

/**
 * Copies every record of `from` into `to` (both started) and verifies the copy. Throws
 * StoreError TARGET_NOT_EMPTY (nothing written) when `to` holds any record, IMPORT_CONFLICT if a
 * record appears meanwhile, and COPY_MISMATCH when the verification fails (the target then holds
 * a partial or different copy: empty it before trying again).
 */
export async function copyStore(from: Store, to: Store, options: CopyOptions = {}): Promise<CopyResult> {
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new Error(`copyStore: batchSize must be an integer >= 1, not ${String(batchSize)}`);
  // A device entry can hold many records (its history): a batch is also cut at this many records.
  const maxRecords = batchSize * 50;

  const existing = await to.countEntries();
  const present = COUNT_KINDS.filter((k) => existing[k] > 0);
  if (present.length > 0) {
    throw new StoreError(
      'TARGET_NOT_EMPTY',
      `the target store is not empty (${present.map((k) => `${k}=${existing[k]}`).join(' ')}); nothing was written`,
      { details: { counts: existing } },
    );
  }

  const total = await from.countEntries();
  const copied = emptyCounts();
  const source = new EntryDigest();
  let batch: StoreEntry[] = [];
  let records = 0;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    await to.importEntries(batch);
    for (const entry of batch) countEntry(copied, entry);
    batch = [];
    records = 0;
    options.onProgress?.({ copied: { ...copied }, total });
  };
  for await (const entry of from.exportEntries()) {
    source.add(entry);
    batch.push(entry);
    records += entry.kind === 'device' ? 1 + entry.events.length + entry.certificates.length + entry.configDocuments.length + entry.bootstrapTokens.length : 1;
    if (batch.length >= batchSize || records >= maxRecords) await flush();
  }
  await flush();
  const sourceDigest = source.digest();

  const [sourceCounts, targetCounts] = await Promise.all([from.countEntries(), to.countEntries()]);
  const problems = [
    ...countDifferences(sourceCounts, copied, 'source', 'exported').map((d) => `source export incomplete or source changed: ${d}`),
    ...countDifferences(sourceCounts, targetCounts, 'source', 'target').map((d) => `counts differ: ${d}`),
  ];
  const target = await digestStore(to);
  problems.push(...countDifferences(targetCounts, target.counts, 'target', 'target export').map((d) => `target export differs from its counts: ${d}`));
  if (target.digest !== sourceDigest) problems.push(`digests differ: source ${sourceDigest}, target ${target.digest}`);
  if (problems.length > 0) {
    throw new StoreError('COPY_MISMATCH', `the copy does not match its source: ${problems.join('; ')}`, {
      details: { source: sourceCounts, target: targetCounts, sourceDigest, targetDigest: target.digest },
    });
  }
  return { counts: targetCounts, digest: sourceDigest };
}
