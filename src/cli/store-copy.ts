/**
 * `provisiond store copy --from <spec> --to <spec>`: copies a whole store into an empty one
 * (src/store/copy.ts) and verifies counts and digest. A spec is `sqlite:<path to provisiond.db>`,
 * a `redis://` / `rediss://` URL (with a key prefix, default `provisiond:`), or `config`: the store
 * the service configuration names (--config file and PROVISIOND_* variables; the way to reach a
 * Sentinel or Cluster deployment).
 */
import fs from 'node:fs';
import { createStore, describeRedis, StoreError, type Store, type StoreConfig } from '../store/index.js';
import { copyStore, formatCounts, type CopyProgress } from '../store/copy.js';

export const DEFAULT_REDIS_PREFIX = 'provisiond:';

/** A bad spec or option: the caller prints it with the usage text. */
export class StoreSpecError extends Error {}

/** Parses `sqlite:<path>`, a redis(s):// URL or `config`; `prefix` only goes with a Redis URL. */
export function parseStoreSpec(spec: string, prefix: string | undefined, option: string, configured: () => StoreConfig): StoreConfig {
  if (spec === 'config') {
    if (prefix !== undefined) throw new StoreSpecError(`${option}-prefix does not go with config (set store.redisPrefix there)`);
    return configured();
  }
  if (spec.startsWith('sqlite:')) {
    const file = spec.slice('sqlite:'.length);
    if (file === '') throw new StoreSpecError(`${option}: sqlite: needs a file path (sqlite:<path to provisiond.db>)`);
    if (prefix !== undefined) throw new StoreSpecError(`${option}-prefix only applies to a Redis store`);
    return { kind: 'sqlite', file };
  }
  if (spec.startsWith('redis://') || spec.startsWith('rediss://')) {
    try {
      new URL(spec);
    } catch {
      throw new StoreSpecError(`${option}: not a valid URL`);
    }
    if (prefix === '') throw new StoreSpecError(`${option}-prefix must not be empty`);
    return { kind: 'redis', url: spec, prefix: prefix ?? DEFAULT_REDIS_PREFIX };
  }
  throw new StoreSpecError(`${option} must be sqlite:<path>, a redis:// or rediss:// URL, or config`);
}

/** For messages: the store without any password. */
export function describeStore(config: StoreConfig): string {
  if (config.kind === 'sqlite') return `sqlite:${config.file}`;
  return `${describeRedis(config)} (prefix ${config.prefix})`;
}

function sameStore(a: StoreConfig, b: StoreConfig): boolean {
  if (a.kind === 'sqlite' && b.kind === 'sqlite') {
    const real = (f: string) => (fs.existsSync(f) ? fs.realpathSync(f) : f);
    return real(a.file) === real(b.file);
  }
  return a.kind === 'redis' && b.kind === 'redis' && describeRedis(a) === describeRedis(b) && a.prefix === b.prefix;
}

export interface StoreCopyOptions {
  from: StoreConfig;
  to: StoreConfig;
  batchSize: number;
}

/**
 * Runs the copy: progress on stderr, the summary on stdout. Returns the exit status: 0 copied and
 * verified; 1 refused (target not empty, a record exists) or the verification failed. Throws
 * StoreSpecError for unusable specs and other StoreErrors (STORE_UNAVAILABLE) as they are.
 */
export async function runStoreCopy(opts: StoreCopyOptions): Promise<number> {
  const { from, to } = opts;
  if (sameStore(from, to)) throw new StoreSpecError('--from and --to name the same store');
  // Opening a missing SQLite file would create an empty store and "copy" nothing.
  if (from.kind === 'sqlite' && !fs.existsSync(from.file)) throw new StoreSpecError(`--from ${from.file}: no such file`);

  const source = createStore(from);
  const target = createStore(to);
  const started: Store[] = [];
  try {
    await source.start();
    started.push(source);
    await target.start();
    started.push(target);
    console.error(`provisiond: store copy: ${describeStore(from)} -> ${describeStore(to)}`);

    let lastReport = 0;
    const onProgress = ({ copied, total }: CopyProgress) => {
      const now = Date.now();
      const done = copied.devices >= total.devices;
      if (!done && now - lastReport < 1000) return;
      lastReport = now;
      console.error(`provisiond: store copy: ${copied.devices}/${total.devices} devices, ${formatCounts(copied)}`);
    };
    const result = await copyStore(source, target, { batchSize: opts.batchSize, onProgress });
    if (result.counts.devices === 0) console.error('provisiond: store copy: note: the source holds no devices');
    console.log(`copied ${formatCounts(result.counts)}; counts match; digest ${result.digest}`);
    return 0;
  } catch (err) {
    if (err instanceof StoreError && (err.code === 'TARGET_NOT_EMPTY' || err.code === 'IMPORT_CONFLICT' || err.code === 'COPY_MISMATCH')) {
      console.error(`provisiond: store copy failed: ${err.code}: ${err.message}`);
      if (err.code !== 'TARGET_NOT_EMPTY') console.error('provisiond: the target may hold a partial copy: empty it before trying again');
      return 1;
    }
    throw err;
  } finally {
    for (const s of started) await s.stop().catch(() => {});
  }
}
