/**
 * Starts a throwaway redis-server for tests: a free port on 127.0.0.1, no persistence.
 * Requires the redis-server binary (apt-get install redis-server; .ci/run installs it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

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
export async function startRedisServer(opts: { port?: number; dataDir?: string } = {}): Promise<RedisServer> {
  const bin = findBinary();
  const port = opts.port ?? (await freePort());
  const persistence = opts.dataDir ? ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', opts.dataDir] : ['--appendonly', 'no'];
  const child = spawn(bin, ['--port', String(port), '--save', '', ...persistence, '--bind', '127.0.0.1', '--protected-mode', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
