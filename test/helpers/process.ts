/**
 * Runs provisiond as a real child process (`node --import tsx src/cli/main.ts start`), configured
 * only through PROVISIOND_* environment variables, as an operator would run it. The bound ports
 * are read from the process's stderr line `provisiond: HTTP <url>  MQTT/TLS port <n>`; stdout (JSON
 * logs) and stderr are kept (the last part) for failure messages.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const READY = /provisiond: HTTP (\S+)\s+MQTT\/TLS port (\d+)/;
const STARTED_LOG = /"est":(\d+)[^\n]*"msg":"provisiond started"/;
const KEEP_OUTPUT_CHARS = 256 * 1024;

/** Children still running, killed when the test process exits (a crashed test leaves none behind). */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** `{ http: { port: 0 } }` -> `{ PROVISIOND_HTTP__PORT: '0' }` (objects below the leaves become JSON). */
export function settingsToEnv(settings: Record<string, unknown>, path: string[] = []): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(settings)) {
    if (value === undefined) continue;
    const at = [...path, key];
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && path.length === 0) {
      // settings are at most two levels deep: `store.redisUrl`; deeper objects (a network) are JSON
      Object.assign(env, settingsToEnv(value as Record<string, unknown>, at));
      continue;
    }
    const name = 'PROVISIOND_' + at.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('__');
    env[name] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  return env;
}

export interface HttpAnswer<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  /** The parsed JSON body (undefined when the body is not JSON). */
  body: T;
  text: string;
}

export interface ServiceProcess {
  readonly name: string;
  readonly pid: number;
  /** http://127.0.0.1:<port> */
  readonly httpUrl: string;
  readonly httpPort: number;
  readonly mqttPort: number;
  /** The EST (HTTPS) port, read from the "provisiond started" log line (needs logLevel info or lower). */
  readonly estPort: number | undefined;
  /** mqtts://localhost:<port> (the broker certificate names localhost) */
  readonly mqttUrl: string;
  /** Exit code or signal once the process ended; undefined while it runs. */
  readonly exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** The last part of stdout and stderr, interleaved, for failure messages. */
  output(): string;
  /** A JSON request to the HTTP API (`key`: Bearer API key). */
  request<T = Record<string, unknown>>(method: string, path: string, opts?: { key?: string; body?: unknown; timeoutMs?: number }): Promise<HttpAnswer<T>>;
  /** SIGTERM, wait for the exit (SIGKILL after `timeoutMs`). */
  stop(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface ServiceProcessOptions {
  /** A label for messages ("A", "B"). */
  name: string;
  dataDir: string;
  /** Settings as in a JSON config file; passed as PROVISIOND_* environment variables. */
  settings?: Record<string, unknown>;
  /** Time the process has to print its ready line. */
  startTimeoutMs?: number;
  /** How much of the output output() keeps (default 256 KiB; Infinity keeps everything). */
  keepOutputChars?: number;
}

/**
 * Starts `provisiond start` with HTTP, MQTT and EST on 127.0.0.1 port 0 (unless `settings` say
 * otherwise) and resolves once it printed its ready line.
 */
export async function startServiceProcess(opts: ServiceProcessOptions): Promise<ServiceProcess> {
  const settings = {
    logLevel: 'info',
    ...opts.settings,
    dataDir: opts.dataDir,
    http: { host: '127.0.0.1', port: 0, ...(opts.settings?.http as object | undefined) },
    mqtt: { host: '127.0.0.1', port: 0, ...(opts.settings?.mqtt as object | undefined) },
    est: { port: 0, ...(opts.settings?.est as object | undefined) },
  };
  // the child sees only our PROVISIOND_* settings, none of the caller's
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PROVISIOND_')));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'start'], {
    cwd: ROOT,
    env: { ...inherited, ...settingsToEnv(settings) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let out = '';
  let stderr = '';
  const keepChars = opts.keepOutputChars ?? KEEP_OUTPUT_CHARS;
  const keep = (chunk: string) => {
    out += chunk;
    if (out.length > keepChars * 2) out = out.slice(-keepChars);
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => keep(d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    keep(d);
    if (stderr.length < 64 * 1024) stderr += d;
  });
  let exit: ServiceProcess['exit'];
  const exited = new Promise<NonNullable<ServiceProcess['exit']>>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      running.delete(child);
      resolve(exit);
    });
  });
  const output = () => (keepChars === Infinity ? out : out.slice(-keepChars));

  const stop = async (timeoutMs = 10_000) => {
    if (exit) return exit;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  };

  // ready line, early exit or timeout
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`provisiond ${opts.name} did not start within ${startTimeoutMs} ms; output:\n${output().slice(-4000)}`));
    }, startTimeoutMs);
    const onData = () => {
      const m = READY.exec(stderr);
      if (m) {
        cleanup();
        resolve(m);
      }
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`provisiond ${opts.name} exited before it was ready (code ${code}, signal ${signal}); output:\n${output().slice(-4000)}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.stderr!.off('data', onData);
      child.off('exit', onExit);
    };
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
  }).catch(async (err: unknown) => {
    await stop(2000);
    throw err;
  });

  // the log line with the EST port is written (to stdout) just before the ready line (to stderr)
  let estPort: number | undefined;
  const estDeadline = Date.now() + 2000;
  while (Date.now() < estDeadline && ['info', 'debug', 'trace'].includes(String(settings.logLevel))) {
    const m = STARTED_LOG.exec(out);
    if (m) {
      estPort = Number(m[1]);
      break;
    }
    await new Promise((r) => setTimeout(r, 10));
  }

  const httpUrl = ready[1]!;
  const httpPort = Number(new URL(httpUrl).port);
  const mqttPort = Number(ready[2]);

  return {
    name: opts.name,
    pid: child.pid!,
    httpUrl,
    httpPort,
    mqttPort,
    estPort,
    mqttUrl: `mqtts://localhost:${mqttPort}`,
    get exit() {
      return exit;
    },
    output,
    async request<T>(method: string, path: string, o: { key?: string; body?: unknown; timeoutMs?: number } = {}) {
      const headers: Record<string, string> = {};
      if (o.key) headers.authorization = `Bearer ${o.key}`;
      if (o.body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(httpUrl + path, {
        method,
        headers,
        ...(o.body !== undefined ? { body: JSON.stringify(o.body) } : {}),
        signal: AbortSignal.timeout(o.timeoutMs ?? 20_000),
      });
      const text = await res.text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      return { status: res.status, headers: res.headers, body: body as T, text };
    },
    stop,
  };
}

export interface RoleKeys {
  admin: string;
  factory: string;
  installer: string;
  viewer: string;
}

/** API keys for the other roles, made through the API with the admin key (they live in the shared store). */
export async function createRoleKeys(p: ServiceProcess, admin: string): Promise<RoleKeys> {
  const make = async (role: 'factory' | 'installer' | 'viewer') => {
    const res = await p.request<{ secret: string }>('POST', '/v1/admin/api-keys', { key: admin, body: { name: `test ${role}`, role } });
    if (res.status !== 201) throw new Error(`creating a ${role} key through ${p.name} failed: ${res.status} ${res.text}`);
    return res.body.secret;
  };
  const [factory, installer, viewer] = await Promise.all([make('factory'), make('installer'), make('viewer')]);
  return { admin, factory: factory!, installer: installer!, viewer: viewer! };
}

export interface ServicePair {
  a: ServiceProcess;
  b: ServiceProcess;
  keys: RoleKeys;
  /** What both processes said lately, for failure messages. */
  outputs(): string;
  /** SIGTERM to both; their exits (a clean shutdown is `{ code: 0, signal: null }` each). */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }[]>;
}

/**
 * Two processes A and B on one Redis store, sharing `dataDir` (the same CA and secrets). A starts
 * first: it creates the CA and the secrets that B then loads.
 */
export async function startServicePair(opts: { dataDir: string; redisUrl: string; prefix: string; adminKey: string }): Promise<ServicePair> {
  const settings = { adminApiKey: opts.adminKey, store: { kind: 'redis', redisUrl: opts.redisUrl, redisPrefix: opts.prefix } };
  const a = await startServiceProcess({ name: 'A', dataDir: opts.dataDir, settings });
  let b: ServiceProcess;
  try {
    b = await startServiceProcess({ name: 'B', dataDir: opts.dataDir, settings });
  } catch (err) {
    await a.stop();
    throw err;
  }
  const keys = await createRoleKeys(a, opts.adminKey);
  return {
    a,
    b,
    keys,
    outputs: () => [a, b].map((p) => `--- ${p.name} (exit ${JSON.stringify(p.exit)}):\n${p.output().split('\n').slice(-40).join('\n')}`).join('\n'),
    stop: () => Promise.all([a.stop(), b.stop()]),
  };
}
