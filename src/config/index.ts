/**
 * Configuration: schemas/config.json is the one definition (defaults, bounds, descriptions).
 * Sources, later wins: defaults < JSON file (--config / PROVISIOND_CONFIG) < environment
 * PROVISIOND_<PATH> (camelCase -> UPPER_SNAKE, levels joined by "__"). Validated once at start;
 * a bad setting stops the start with a message naming the setting, where it came from, and what
 * is allowed.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ErrorObject } from 'ajv';
import type { ServiceConfig } from '../../schemas/types.js';
import { createAjv, getValidator } from '../schemas.js';
import { ConfigError } from './errors.js';

export { ConfigError } from './errors.js';

type Defaulted<T> = { [K in keyof T]-?: NonNullable<T[K]> };
/** Store settings without a default. */
type RedisOptional = 'redisUrl' | 'redisSentinels' | 'redisSentinelPassword' | 'redisClusterNodes';

/** The configuration after defaults: every section and every defaulted setting is present. */
export type Config = Omit<Defaulted<ServiceConfig>, 'adminApiKey' | 'http' | 'mqtt' | 'ca' | 'bootstrap' | 'claims' | 'provisioning' | 'alerts' | 'est' | 'store'> & {
  adminApiKey?: string;
  http: Defaulted<NonNullable<ServiceConfig['http']>>;
  mqtt: Defaulted<Omit<NonNullable<ServiceConfig['mqtt']>, 'publicPort'>> & { publicPort?: number };
  ca: Defaulted<Pick<NonNullable<ServiceConfig['ca']>, 'organization' | 'deviceCertValidityDays'>> &
    Pick<NonNullable<ServiceConfig['ca']>, 'issuingCertFile' | 'issuingKeyFile' | 'rootCertFile' | 'keyPassphrase' | 'keyPassphraseFile'>;
  bootstrap: Defaulted<NonNullable<ServiceConfig['bootstrap']>>;
  claims: Defaulted<NonNullable<ServiceConfig['claims']>>;
  provisioning: Defaulted<Pick<NonNullable<ServiceConfig['provisioning']>, 'securityPolicy' | 'stallScanIntervalSeconds' | 'provisionalWindowDays'>> &
    Pick<NonNullable<ServiceConfig['provisioning']>, 'defaultNetwork'>;
  alerts: Defaulted<NonNullable<ServiceConfig['alerts']>>;
  est: Defaulted<Omit<NonNullable<ServiceConfig['est']>, 'host'>> & { host?: string };
  store: Defaulted<Omit<NonNullable<ServiceConfig['store']>, RedisOptional>> & Pick<NonNullable<ServiceConfig['store']>, RedisOptional>;
};

export const ENV_PREFIX = 'PROVISIOND_';
/** Not a setting: names the config file. */
export const CONFIG_FILE_ENV = 'PROVISIOND_CONFIG';

/** `http.bodyLimitBytes` -> `PROVISIOND_HTTP__BODY_LIMIT_BYTES` */
export function envName(path: readonly string[]): string {
  return ENV_PREFIX + path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('__');
}

function envPath(name: string): string[] {
  return name
    .slice(ENV_PREFIX.length)
    .split('__')
    .map((seg) => seg.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase()));
}

export interface ConfigSources {
  /** Path of a JSON config file (takes precedence over env PROVISIOND_CONFIG). */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Settings given programmatically (tests, the demo); applied after the file, before env. */
  overrides?: ServiceConfig;
}

export function loadConfig(sources: ConfigSources = {}): Config {
  const env = sources.env ?? {};
  const origin = new Map<string, string>();
  let data: Record<string, unknown> = {};

  const file = sources.file ?? env[CONFIG_FILE_ENV];
  if (file) {
    let text: string;
    try {
      text = readFileSync(resolve(file), 'utf8');
    } catch (cause) {
      throw new ConfigError('CONFIG_FILE_UNREADABLE', `cannot read config file ${file}: ${(cause as Error).message}`, { cause });
    }
    try {
      data = JSON.parse(text) as Record<string, unknown>;
    } catch (cause) {
      throw new ConfigError('CONFIG_FILE_UNREADABLE', `config file ${file} is not valid JSON: ${(cause as Error).message}`, { cause });
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      throw new ConfigError('CONFIG_FILE_UNREADABLE', `config file ${file} must hold a JSON object`);
    }
    markOrigins(data, [], `config file ${file}`, origin);
  }
  if (sources.overrides) {
    data = merge(data, structuredClone(sources.overrides) as Record<string, unknown>);
    markOrigins(sources.overrides as Record<string, unknown>, [], 'overrides', origin);
  }
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || name === CONFIG_FILE_ENV || raw === undefined) continue;
    const path = envPath(name);
    let value: unknown = raw;
    const trimmed = raw.trim();
    if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
      try {
        value = JSON.parse(trimmed);
      } catch {
        throw new ConfigError('CONFIG_INVALID', `invalid configuration: ${name} looks like JSON but does not parse`);
      }
    }
    setPath(data, path, value);
    origin.set(path.join('.'), `env ${name}`);
  }

  const ajv = createAjv({ useDefaults: true, coerceTypes: true, verbose: true });
  const validate = getValidator<ServiceConfig>(ajv, 'config');
  if (!validate(data)) {
    throw new ConfigError('CONFIG_INVALID', `invalid configuration:\n${explain(validate.errors ?? [], origin)}`);
  }
  const cfg = data as Config;
  const external = [cfg.ca.issuingCertFile, cfg.ca.issuingKeyFile, cfg.ca.rootCertFile].filter(Boolean).length;
  if (external !== 0 && external !== 3) {
    throw new ConfigError(
      'CONFIG_INVALID',
      'invalid configuration:\n  - ca.issuingCertFile, ca.issuingKeyFile and ca.rootCertFile must be set together (to use your own CA) or not at all',
    );
  }
  if (cfg.ca.keyPassphraseFile !== undefined) {
    if (cfg.ca.keyPassphrase !== undefined) {
      throw new ConfigError('CONFIG_INVALID', 'invalid configuration:\n  - ca.keyPassphrase and ca.keyPassphraseFile are both set; set one of them');
    }
    cfg.ca.keyPassphrase = readPassphraseFile(cfg.ca.keyPassphraseFile);
  }
  if (cfg.store.kind === 'redis' && !cfg.store.redisUrl) {
    throw new ConfigError('CONFIG_INVALID', 'invalid configuration:\n  - store.redisUrl is required when store.kind is "redis" (settable as PROVISIOND_STORE__REDIS_URL)');
  }
  if (cfg.store.kind === 'redis' && cfg.store.redisTopology === 'sentinel' && !cfg.store.redisSentinels) {
    throw new ConfigError(
      'CONFIG_INVALID',
      'invalid configuration:\n  - store.redisSentinels is required when store.redisTopology is "sentinel" (settable as PROVISIOND_STORE__REDIS_SENTINELS=\'["host:26379"]\')',
    );
  }
  const misplaced = [
    cfg.store.redisTopology !== 'sentinel' && cfg.store.redisSentinels && 'store.redisSentinels',
    cfg.store.redisTopology !== 'sentinel' && cfg.store.redisSentinelPassword && 'store.redisSentinelPassword',
    cfg.store.redisTopology !== 'cluster' && cfg.store.redisClusterNodes && 'store.redisClusterNodes',
  ].filter(Boolean);
  if (misplaced.length > 0) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `invalid configuration:\n${misplaced.map((name) => `  - ${name} is set but store.redisTopology is "${cfg.store.redisTopology}"`).join('\n')}`,
    );
  }
  const net = cfg.provisioning.defaultNetwork;
  if (net && net.wifi.security !== 'open' && !net.wifi.secret) {
    throw new ConfigError('CONFIG_INVALID', 'invalid configuration:\n  - provisioning.defaultNetwork.wifi.secret is required unless wifi.security is "open"');
  }
  return cfg;
}

/** The first line of a passphrase file (a container secret); messages name the file, never its content. */
function readPassphraseFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(resolve(file), 'utf8');
  } catch (cause) {
    throw new ConfigError('CONFIG_FILE_UNREADABLE', `cannot read ca.keyPassphraseFile ${file}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const passphrase = text.split(/\r?\n/, 1)[0] ?? '';
  if (passphrase.length < 12) {
    throw new ConfigError('CONFIG_INVALID', `invalid configuration:\n  - ca.keyPassphraseFile ${file}: the passphrase (its first line) must have at least 12 characters`);
  }
  return passphrase;
}

function explain(errors: readonly ErrorObject[], origin: Map<string, string>): string {
  const out = new Set<string>();
  for (const e of errors) {
    if (e.keyword === 'oneOf' || e.keyword === 'allOf') continue;
    const segs = e.instancePath.split('/').slice(1);
    if (e.keyword === 'additionalProperties') segs.push(String(e.params.additionalProperty));
    const path = segs.join('.') || '(root)';
    const from = origin.get(path) ?? nearestOrigin(segs, origin);
    const got = e.keyword === 'additionalProperties' || !showable(segs, e.data) ? '' : `got ${JSON.stringify(e.data)}, `;
    const where = ` (${got}${from ? `from ${from}` : `settable as ${envName(segs)}`})`;
    let what: string;
    switch (e.keyword) {
      case 'additionalProperties':
        what = 'is not a known setting';
        break;
      case 'enum':
        what = `must be one of: ${(e.params.allowedValues as unknown[]).join(', ')}`;
        break;
      case 'minimum':
      case 'maximum':
        what = `must be ${e.keyword === 'minimum' ? '>=' : '<='} ${String(e.params.limit)}`;
        break;
      default:
        what = e.message ?? 'is invalid';
    }
    out.add(`  - ${path}: ${what}${where}`);
  }
  return [...out].join('\n');
}

/** Settings whose values never appear in messages (keys, passwords, URLs that may carry one). */
const SECRET_NAME = /key|password|passphrase|secret|token|url/i;

/** Whether a refused value may be echoed: a plain value of a setting that is not a secret. */
function showable(segs: readonly string[], data: unknown): boolean {
  if (data === undefined || (data !== null && typeof data === 'object')) return false;
  return !segs.some((s) => SECRET_NAME.test(s));
}

function nearestOrigin(segs: string[], origin: Map<string, string>): string | undefined {
  for (let i = segs.length - 1; i > 0; i--) {
    const o = origin.get(segs.slice(0, i).join('.'));
    if (o) return o;
  }
  return undefined;
}

function markOrigins(obj: Record<string, unknown>, prefix: string[], from: string, origin: Map<string, string>): void {
  for (const [k, v] of Object.entries(obj)) {
    const path = [...prefix, k];
    origin.set(path.join('.'), from);
    if (v && typeof v === 'object' && !Array.isArray(v)) markOrigins(v as Record<string, unknown>, path, from, origin);
  }
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let cur = obj;
  for (const seg of path.slice(0, -1)) {
    const next = cur[seg];
    if (!next || typeof next !== 'object' || Array.isArray(next)) cur[seg] = {};
    cur = cur[seg] as Record<string, unknown>;
  }
  cur[path[path.length - 1]!] = value;
}

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b)
        ? merge(b as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}
