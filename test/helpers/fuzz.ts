/**
 * Shared parts of the fuzz suites (test/fuzz/): how many cases, which error codes are documented,
 * and the whole-store digest that proves a rejected input changed nothing.
 */
import { readFileSync } from 'node:fs';
import type fc from 'fast-check';
import { createHash } from 'node:crypto';
import { canonicalJson } from '../../src/store/copy.js';
import type { ServiceConfig } from '../../schemas/types.js';
import type { Store } from '../../src/store/index.js';
import type { StoreEntry } from '../../src/store/types.js';

/** Cases per route / payload type: ~200 in the default run, 10,000 with `npm run test:fuzz`. */
export const FUZZ_RUNS = Math.max(1, Number(process.env.PROVISIOND_FUZZ_RUNS ?? 200));

/** fast-check parameters: a fixed seed when PROVISIOND_FUZZ_SEED is set; no shrinking (the service is stateful). */
export function fuzzParams(numRuns: number): fc.Parameters<unknown> {
  const seed = process.env.PROVISIOND_FUZZ_SEED;
  return { numRuns, endOnFailure: true, ...(seed ? { seed: Number(seed) } : {}) };
}

/** A test timeout that grows with the number of cases (ms per case, plus set-up). */
export const fuzzTimeout = (msPerCase: number, runs = FUZZ_RUNS) => 60_000 + Math.ceil(runs * msPerCase);

/**
 * Service settings for fuzzing, where the configuration has them: request and connection rate
 * limits off (the fuzzers send thousands of requests a second from one address), and the
 * periodic jobs that write on their own (the stall scan, the sweep of expired credentials) as
 * rare as allowed, so that what changes the store during a case is the case.
 */
export function fuzzService(base: ServiceConfig = {}): ServiceConfig {
  const schema = JSON.parse(read('schemas/config.json')) as { properties: Record<string, { properties?: Record<string, { maximum?: number }> }> };
  const has = (section: string, key: string) => key in (schema.properties[section]?.properties ?? {});
  const set = (section: string, keys: string[], value: (key: string) => number) => Object.fromEntries(keys.filter((k) => has(section, k)).map((k) => [k, value(k)]));
  const max = (section: string) => (key: string) => schema.properties[section]!.properties![key]!.maximum!;
  return {
    ...base,
    http: { ...base.http, ...set('http', ['rateLimitPerClientPerSecond', 'rateLimitPerTenantPerSecond'], () => 0) },
    mqtt: { ...base.mqtt, ...set('mqtt', ['connectionRatePerAddressPerSecond', 'connectionRatePerSecond'], () => 0) },
    provisioning: { ...base.provisioning, ...set('provisioning', ['stallScanIntervalSeconds'], max('provisioning')) },
    bootstrap: { ...base.bootstrap, ...set('bootstrap', ['sweepIntervalSeconds'], max('bootstrap')) },
  } as ServiceConfig;
}

const read = (f: string) => readFileSync(new URL(`../../${f}`, import.meta.url), 'utf8');

/** Backticked codes in the first column of the markdown tables of `text`. */
function tableCodes(text: string): Set<string> {
  return new Set([...text.matchAll(/^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|/gm)].map((m) => m[1]!));
}

function section(text: string, heading: string): string {
  const start = text.indexOf(heading);
  if (start < 0) throw new Error(`no section "${heading}"`);
  const level = /^#+/.exec(heading)![0].length;
  const rest = text.slice(start + heading.length);
  const end = rest.search(new RegExp(`^#{1,${level}} `, 'm'));
  return end < 0 ? rest : rest.slice(0, end);
}

/** The codes of docs/operations.md "Error codes": what an HTTP error body may carry. */
export function documentedHttpCodes(): Set<string> {
  return tableCodes(section(read('docs/operations.md'), '## Error codes'));
}

/** The codes of docs/protocol.md §19.2: what a device's csr/rejected or errors message may carry. */
export function documentedDeviceCodes(): Set<string> {
  return tableCodes(section(read('docs/protocol.md'), '### 19.2 JSON error payloads'));
}

/** §19.2 and the codes docs/hubs.md names: what a hub's rejected / errors messages may carry. */
export function documentedHubCodes(): Set<string> {
  const hubs = read('docs/hubs.md');
  return new Set([...documentedDeviceCodes(), ...[...hubs.matchAll(/`([A-Z][A-Z0-9_]{3,})`/g)].map((m) => m[1]!)]);
}

/**
 * The whole store's digest (as src/store/copy.ts makes it: SHA-256 over the canonical JSON of
 * every exported entry, in export order), to compare before and after rejected input. The audit
 * log is left out: refused and failed actions are recorded there on purpose (src/audit/trail.ts),
 * so instead a rejected input must not add a *success* entry (the newest one stays the same).
 */
export class StoreWatch {
  #baseline = '';
  #entries = new Map<string, string>();
  /** Calls of the store's writing methods so far (appendAudit aside). */
  writes = 0;
  /** Audit entries with outcome "success" appended so far. */
  successAudits = 0;

  constructor(private readonly store: Store) {}

  /**
   * Counts the successful calls of every writing method of the store (insert*, update*, delete*,
   * commit*, set*, import*, ...): a case during which none succeeded cannot have changed the store, so
   * the (costly) digest is taken after the cases that did call one, and every `periodicEvery`
   * cases to make sure of it.
   */
  instrument(): this {
    const store = this.store as unknown as Record<string, unknown>;
    const names = new Set<string>();
    for (let proto = Object.getPrototypeOf(store) as object | null; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto) as object | null) {
      for (const name of Object.getOwnPropertyNames(proto)) if (name !== 'constructor' && typeof store[name] === 'function') names.add(name);
    }
    for (const name of names) {
      if (!/^(insert|update|delete|commit|append|set|import|put|remove|consume)/.test(name)) continue;
      const original = (store[name] as (...args: unknown[]) => unknown).bind(store);
      store[name] =
        name === 'appendAudit'
          ? (...args: unknown[]) => {
              const entries = (args[0] ?? []) as { outcome?: string }[];
              this.successAudits += entries.filter((e) => e.outcome === 'success').length;
              return original(...args);
            }
          : async (...args: unknown[]) => {
              const result = await original(...args);
              // counted once it succeeded: a store call is atomic, one that failed wrote nothing
              // (the periodic digest checks that too)
              this.writes++;
              return result;
            };
    }
    return this;
  }

  /** The digest, and every entry's canonical JSON by its identity (for a readable difference). */
  async snapshot(): Promise<{ digest: string; entries: Map<string, string> }> {
    const hash = createHash('sha256');
    const entries = new Map<string, string>();
    for await (const entry of this.store.exportEntries()) {
      // the audit log comes last in every backend's export
      if ((entry as { kind: string }).kind === 'audit') break;
      const text = canonicalJson(entry);
      hash.update(text);
      hash.update('\n');
      entries.set(entryKey(entry), text);
    }
    const audit = (this.store as Partial<{ listAudit(q: { outcome: 'success'; limit: number }): Promise<{ entries: { id: string }[] }> }>).listAudit;
    const lastSuccess = audit ? ((await audit.call(this.store, { outcome: 'success', limit: 1 })).entries[0]?.id ?? '-') : '-';
    return { digest: `sha256:${hash.digest('hex')} audit-success:${lastSuccess}`, entries };
  }

  async digest(): Promise<string> {
    return (await this.snapshot()).digest;
  }

  /** Takes the current state as the reference. */
  async reset(): Promise<void> {
    const { digest, entries } = await this.snapshot();
    this.#baseline = digest;
    this.#entries = entries;
  }

  /** Throws when the store differs from the reference (naming the records that differ). */
  async expectUnchanged(what: () => string): Promise<void> {
    const { digest, entries } = await this.snapshot();
    if (digest === this.#baseline) return;
    const changed: string[] = [];
    for (const [k, v] of entries) {
      const before = this.#entries.get(k);
      if (before === undefined) changed.push(`+ ${brief(v, 600)}`);
      else if (before !== v) changed.push(`~ ${k}\n    before …${around(before, v)}\n    after  …${around(v, before)}`);
    }
    for (const k of this.#entries.keys()) if (!entries.has(k)) changed.push(`- ${k}`);
    if (changed.length === 0) changed.push(`audit success entry: ${this.#baseline.split(' ')[1]} -> ${digest.split(' ')[1]}`);
    this.#baseline = digest;
    this.#entries = entries;
    throw new Error(`stored state changed by rejected input: ${what()}\n${changed.slice(0, 10).join('\n')}`);
  }
}

/** `a` around its first difference from `b`. */
function around(a: string, b: string): string {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return `${a.slice(Math.max(0, i - 200), i + 300)}…`;
}

function entryKey(entry: StoreEntry): string {
  switch (entry.kind) {
    case 'tenant':
      return `tenant ${entry.tenant.id}`;
    case 'profileVersion':
      return `profile ${entry.profile.tenantId}/${entry.profile.id}@${entry.profile.version}`;
    case 'apiKey':
      return `apiKey ${entry.apiKey.id}`;
    case 'meta':
      return `meta ${entry.key}`;
    case 'device':
      return `device ${entry.device.id}`;
    default:
      return `${(entry as { kind: string }).kind} ${canonicalJson(entry).slice(0, 80)}`;
  }
}

/** A short description of a value for failure messages. */
export function brief(value: unknown, max = 300): string {
  let s: string;
  if (Buffer.isBuffer(value)) s = `<${value.length} bytes> ${value.subarray(0, 120).toString('hex')}`;
  else if (typeof value === 'string') s = JSON.stringify(value.length > max ? value.slice(0, max) : value) + (value.length > max ? `… (${value.length} chars)` : '');
  else {
    try {
      s = JSON.stringify(value) ?? String(value);
    } catch (err) {
      s = `<${(err as Error).message}>`;
    }
  }
  return s.length > max ? `${s.slice(0, max)}… (${s.length} chars)` : s;
}
