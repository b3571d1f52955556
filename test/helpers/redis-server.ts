/**
 * Starts a throwaway redis-server for tests: a free port on 127.0.0.1, no persistence.
 * Requires the redis-server binary (apt-get install redis-server; .ci/run installs it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { Redis } from 'ioredis';

export interface RedisServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

const CANDIDATES = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'];

function findBinary(): string {
  for (const c of CANDIDATES) if (fs.existsSync(c)) return c;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir !== '' && fs.existsSync(`${dir}/redis-server`)) return `${dir}/redis-server`;
  }
  throw new Error(
    'redis-server not found: install it (apt-get install redis-server; .ci/run installs it) to run the Redis store tests',
  );
}

/** A port that was free a moment ago (listen on 0, read it, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('no port'));
        return;
      }
      srv.close(() => resolve(addr.port));
    });
  });
}

/** Sends PING; resolves true on +PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(500, () => done(false));
    sock.once('error', () => done(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

/** `port`: restart on a known port; `dataDir`: keep the data across restarts (AOF, fsync always). */
export async function startRedisServer(opts: { port?: number; dataDir?: string; args?: readonly string[] } = {}): Promise<RedisServer> {
  const port = opts.port ?? (await freePort());
  const persistence = opts.dataDir ? ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', opts.dataDir] : ['--appendonly', 'no'];
  return launch(['--port', String(port), '--save', '', ...persistence, '--bind', '127.0.0.1', '--protected-mode', 'no', ...(opts.args ?? [])], port);
}

/** Runs redis-server with `args` until it answers PING on `port`. */
async function launch(args: readonly string[], port: number): Promise<RedisServer> {
  const child = spawn(findBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited(child);
      clearTimeout(timer);
    }
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited (code ${child.exitCode}): ${output.slice(-2000)}`);
    if (await ping(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server did not answer PING on port ${port} within 10 s: ${output.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `redis://127.0.0.1:${port}`, port, stop };
}

/** Whether `buf` holds a whole reply: a simple line, a bulk string, or an array of bulk strings. */
function complete(buf: string): boolean {
  const lines = buf.split('\r\n');
  if (lines.length < 2) return false;
  const head = lines[0]!;
  if (head.startsWith('$')) return Number(head.slice(1)) < 0 || buf.length >= head.length + 2 + Number(head.slice(1)) + 2;
  if (head.startsWith('*')) return Number(head.slice(1)) <= 0 || lines.length >= 2 * Number(head.slice(1)) + 2;
  return true;
}

/** Sends one inline command; resolves with the raw reply (ASCII replies only). */
function command(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    sock.setTimeout(2000, () => {
      sock.destroy();
      reject(new Error(`no reply to ${line} on ${port}`));
    });
    sock.once('error', reject);
    sock.once('connect', () => sock.write(`${line}\r\n`));
    sock.on('data', (d) => {
      buf += d.toString();
      if (complete(buf)) {
        sock.destroy();
        resolve(buf);
      }
    });
  });
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface RedisSentinelSetup {
  master: RedisServer;
  replica: RedisServer;
  sentinel: RedisServer;
  /** The master group name the sentinel monitors. */
  name: string;
  /** host:port of the master the sentinel names now. */
  currentMaster(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * A master, one replica and one sentinel (quorum 1, fast failure detection), so that a test can
 * stop the master and watch the sentinel promote the replica.
 */
export async function startRedisSentinel(dir: string): Promise<RedisSentinelSetup> {
  const name = 'provisiond-test';
  // own directories: a replica writes the RDB it receives from its master
  for (const sub of ['master', 'replica']) fs.mkdirSync(`${dir}/${sub}`, { recursive: true });
  const master = await startRedisServer({ args: ['--dir', `${dir}/master`] });
  const replica = await startRedisServer({ args: ['--dir', `${dir}/replica`, '--replicaof', '127.0.0.1', String(master.port)] });
  const port = await freePort();
  const conf = `${dir}/sentinel-${port}.conf`;
  fs.writeFileSync(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      'protected-mode no',
      `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 5000`,
      '',
    ].join('\n'),
  );
  const sentinel = await launch([conf, '--sentinel'], port);
  const currentMaster = async (): Promise<string> => {
    const reply = await command(port, `SENTINEL get-master-addr-by-name ${name}`);
    const parts = reply.split('\r\n').filter((l) => l !== '' && !l.startsWith('*') && !l.startsWith('$'));
    return parts.join(':');
  };
  await until('the sentinel to know the master', async () => (await currentMaster()) === `127.0.0.1:${master.port}`);
  await until('the replica to be in sync', async () => (await command(replica.port, 'INFO replication')).includes('master_link_status:up'));
  return {
    master,
    replica,
    sentinel,
    name,
    currentMaster,
    stop: async () => {
      await sentinel.stop();
      await replica.stop();
      await master.stop();
    },
  };
}

export interface RedisClusterSetup {
  nodes: RedisServer[];
  stop(): Promise<void>;
}

/** A three-master Redis Cluster (no replicas), every slot assigned, state ok. */
export async function startRedisCluster(dir: string): Promise<RedisClusterSetup> {
  const nodes: RedisServer[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      nodes.push(
        await startRedisServer({
          port,
          args: ['--cluster-enabled', 'yes', '--cluster-config-file', `${dir}/nodes-${port}.conf`, '--cluster-node-timeout', '2000'],
        }),
      );
    }
    // the three masters: slots 0-5460, 5461-10922, 10923-16383
    const ranges = [
      [0, 5460],
      [5461, 10922],
      [10923, 16383],
    ] as const;
    for (const [i, node] of nodes.entries()) {
      const [from, to] = ranges[i]!;
      const reply = await command(node.port, `CLUSTER ADDSLOTSRANGE ${from} ${to}`);
      if (!reply.startsWith('+OK')) throw new Error(`CLUSTER ADDSLOTSRANGE on ${node.port}: ${reply}`);
    }
    for (const node of nodes.slice(1)) await command(node.port, `CLUSTER MEET 127.0.0.1 ${nodes[0]!.port}`);
    for (const node of nodes) {
      await until(`cluster state ok on ${node.port}`, async () => {
        const info = await command(node.port, 'CLUSTER INFO');
        return info.includes('cluster_state:ok') && info.includes('cluster_known_nodes:3');
      });
    }
  } catch (err) {
    for (const node of nodes) await node.stop();
    throw err;
  }
  return {
    nodes,
    stop: async () => {
      for (const node of nodes) await node.stop();
    },
  };
}

/**
 * An ioredis connection whose server has gone away (started, connected, then stopped), without
 * retries or queued commands: every command on it fails at once.
 */
export async function connectionToStoppedRedis(): Promise<Redis> {
  const server = await startRedisServer();
  const conn = new Redis(server.url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
  conn.on('error', () => undefined);
  await conn.ping();
  await server.stop();
  return conn;
}
