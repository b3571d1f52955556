/**
 * The operator command line on real parts: the real CLI (a child process, `node --import tsx
 * src/cli/main.ts`) against a real service (SQLite in a temp dir, real CA, HTTP on port 0): the CA
 * commands in temp data directories, devices import / show / list, labels, funnel, events (tailed,
 * then stopped with SIGINT), a wrong key, usage errors, --help; the local commands keep working.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claim, register } from '../helpers/device.js';
import { startTestService, type TestService } from '../helpers/service.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The caller's PROVISIOND_* variables are not passed on: each run gets only `env`. */
function spawnCli(args: string[], env: Record<string, string>): ChildProcess {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PROVISIOND_')));
  return spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...inherited, NODE_NO_WARNINGS: '1', ...env },
  });
}

function collect(child: ChildProcess): { done: Promise<Run>; stdout: () => string } {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<Run>((ok, fail) => {
    child.on('error', fail);
    child.on('close', (code) => ok({ code, stdout, stderr }));
  });
  return { done, stdout: () => stdout };
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return collect(spawnCli(args, env)).done;
}

let ts: TestService;
let dir: string;
let remoteEnv: Record<string, string>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'provisiond-cli-'));
  ts = await startTestService();
  remoteEnv = { PROVISIOND_URL: ts.running.httpUrl, PROVISIOND_API_KEY: ts.keys.admin };
});

afterAll(async () => {
  await ts?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('provisiond command line', () => {
  it('--help lists every command; usage errors exit 2; an unreachable config exits 78', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    for (const command of ['start', 'demo', 'store', 'ca', 'devices', 'labels', 'funnel', 'events', 'simulate']) expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    const devices = await cli(['devices', '--help']);
    expect(devices.code).toBe(0);
    expect(devices.stdout).toMatch(/import \[options\] <file>/);
    expect(devices.stdout).toMatch(/list \[options\]/);
    const importHelp = await cli(['devices', 'import', '--help']);
    expect(importHelp.stdout).toContain('PROVISIOND_API_KEY');

    const unknown = await cli(['bogus']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command bogus');
    const badOption = await cli(['funnel', '--nope'], remoteEnv);
    expect(badOption.code).toBe(2);
    expect(badOption.stderr).toContain("unknown option '--nope'");
    const noUrl = await cli(['funnel']);
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toContain('needs --url or PROVISIOND_URL');

    // start stays the default command: --config alone starts (here: a missing file, 78)
    const missing = await cli(['--config', join(dir, 'nope.json')]);
    expect(missing.code).toBe(78);
    expect(missing.stderr).toContain('provisiond: CONFIG_FILE_UNREADABLE:');
  });

  it('ca init creates the CA once and prints its fingerprints; ca show; ca import checks and installs operator material', async () => {
    const dataDir = join(dir, 'ca-data');
    const env = { PROVISIOND_DATA_DIR: dataDir };
    const init = await cli(['ca', 'init'], env);
    expect(init.code, init.stderr).toBe(0);
    const root = new X509Certificate(await readFile(join(dataDir, 'ca', 'root.pem')));
    const issuing = new X509Certificate(await readFile(join(dataDir, 'ca', 'issuing.pem')));
    expect(init.stdout).toContain(root.fingerprint256);
    expect(init.stdout).toContain(issuing.fingerprint256);
    for (const key of ['root.key', 'issuing.key']) expect(statSync(join(dataDir, 'ca', key)).mode & 0o777).toBe(0o600);

    const again = await cli(['ca', 'init'], env);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^provisiond: CA_EXISTS: /);
    expect(new X509Certificate(await readFile(join(dataDir, 'ca', 'root.pem'))).fingerprint256).toBe(root.fingerprint256);

    const show = await cli(['ca', 'show'], env);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain(root.fingerprint256);

    // that CA as operator material of another data directory
    const other = join(dir, 'ca-import');
    const material = ['--root', join(dataDir, 'ca', 'root.pem'), '--issuing-cert', join(dataDir, 'ca', 'issuing.pem')];
    const mismatched = await cli(['ca', 'import', ...material, '--issuing-key', join(dataDir, 'ca', 'root.key')], { PROVISIOND_DATA_DIR: other });
    expect(mismatched.code).toBe(1);
    expect(mismatched.stderr).toMatch(/^provisiond: CA_MATERIAL_INVALID: issuing key does not match/);
    expect(existsSync(join(other, 'ca', 'operator'))).toBe(false);

    const imported = await cli(['ca', 'import', ...material, '--issuing-key', join(dataDir, 'ca', 'issuing.key')], { PROVISIOND_DATA_DIR: other });
    expect(imported.code, imported.stderr).toBe(0);
    expect(statSync(join(other, 'ca', 'operator', 'issuing.key')).mode & 0o777).toBe(0o600);
    expect(imported.stdout).toContain(`PROVISIOND_CA__ISSUING_KEY_FILE=${join(other, 'ca', 'operator', 'issuing.key')}`);
    // with the printed settings, ca show reports the operator CA
    const settings = Object.fromEntries([...imported.stdout.matchAll(/^ {2}(PROVISIOND_CA__\w+)=(.+)$/gm)].map((m) => [m[1]!, m[2]!]));
    expect(Object.keys(settings)).toHaveLength(3);
    const shown = await cli(['ca', 'show'], { PROVISIOND_DATA_DIR: other, ...settings });
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain('operator CA');
    expect(shown.stdout).toContain(issuing.fingerprint256);
  });

  it('devices import prints created rows with generated claim codes; show, list, labels and funnel', async () => {
    const csv = join(dir, 'devices.csv');
    await writeFile(csv, 'id,model,claimCode\ncli-dev-1,thermostat,\ncli-dev-2,thermostat,\ncli-dev-3,camera,given-code-0003\n');
    const out = join(dir, 'codes.csv');
    const run = await cli(['devices', 'import', csv, '--out', out], remoteEnv);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('devices import: 3 rows: created 3, unchanged 0, failed 0');
    expect(run.stderr).not.toContain(ts.keys.admin);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const rows = (await readFile(out, 'utf8')).trim().split('\n');
    expect(rows[0]).toBe('row,id,status,claimCode,code,message');
    expect(rows[1]).toMatch(/^1,cli-dev-1,created,[^,]{8,},,$/);
    expect(rows[3]).toBe('3,cli-dev-3,created,,,');

    // a failed row: exit 1, the row's code on stdout
    const bad = join(dir, 'bad.csv');
    await writeFile(bad, 'id,model\ncli-dev-1,camera\n');
    const failed = await cli(['devices', 'import', bad], remoteEnv);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/^1,cli-dev-1,failed,,[A-Z_]+,/m);

    const show = await cli(['devices', 'show', 'cli-dev-3', '--json'], remoteEnv);
    expect(show.code).toBe(0);
    expect(JSON.parse(show.stdout)).toMatchObject({ id: 'cli-dev-3', model: 'camera', state: 'registered' });
    const list = await cli(['devices', 'list', '--state', 'registered'], remoteEnv);
    expect(list.code).toBe(0);
    expect(list.stdout.split('\n')[0]).toMatch(/^id\s+model\s+state/);
    for (const id of ['cli-dev-1', 'cli-dev-2', 'cli-dev-3']) expect(list.stdout).toContain(id);
    const missing = await cli(['devices', 'show', 'cli-nope'], remoteEnv);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^provisiond: DEVICE_NOT_FOUND: /);

    // labels from the import's output: an HTML sheet of the two generated codes
    const sheet = join(dir, 'labels.html');
    const labels = await cli(['labels', out, '--out', sheet, '--title', 'Batch 7'], remoteEnv);
    expect(labels.code, labels.stderr).toBe(0);
    expect(labels.stderr).toContain(`labels: 2 labels written to ${sheet} (html`);
    const html = await readFile(sheet, 'utf8');
    expect(html).toContain('Batch 7');
    expect(html).toContain(rows[1]!.split(',')[3]!);
    // one label as SVG
    const one = join(dir, 'one.csv');
    await writeFile(one, 'deviceId,claimCode,model\ncli-dev-3,given-code-0003,camera\n');
    const svg = join(dir, 'one.svg');
    expect((await cli(['labels', one, '--out', svg], remoteEnv)).code).toBe(0);
    expect(await readFile(svg, 'utf8')).toMatch(/<svg[\s>]/);

    const funnel = await cli(['funnel'], remoteEnv);
    expect(funnel.code, funnel.stderr).toBe(0);
    expect(funnel.stdout).toMatch(/^registered\s+\d+$/m);
    expect(funnel.stdout).toMatch(/^model\s+total\s+provisioned%/m);
    const json = await cli(['funnel', '--json'], remoteEnv);
    const report = JSON.parse(json.stdout) as { total: number; byState: Record<string, number> };
    expect(report.byState.registered).toBeGreaterThanOrEqual(3);
    expect(funnel.stdout).toMatch(new RegExp(`^registered\\s+${report.byState.registered}$`, 'm'));
  });

  it('events tails the live stream until Ctrl-C', async () => {
    const child = spawnCli(['events', '--json'], remoteEnv);
    const tail = collect(child);
    // the stream is open once the first event arrives: claim devices until one shows
    let claimed: string | undefined;
    const deadline = Date.now() + 20_000;
    while (!tail.stdout().includes('device.claimed') && Date.now() < deadline) {
      const device = await register(ts);
      expect((await claim(ts, device.claimCode)).statusCode).toBe(201);
      claimed ??= device.id;
      await new Promise((r) => setTimeout(r, 300));
    }
    const first = JSON.parse(tail.stdout().split('\n')[0]!) as { type: string; deviceId: string };
    expect(first.type).toBe('device.claimed');
    child.kill('SIGINT');
    const run = await tail.done;
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
  });

  it('a wrong key prints the API error code and exits 1, without the key', async () => {
    const wrongKey = 'pk_wrong_' + 'x'.repeat(32);
    const expected = (await ts.running.api.inject({ method: 'GET', url: '/v1/reports/fleet', headers: { authorization: `Bearer ${wrongKey}` } })).json() as { code: string; message: string };
    const run = await cli(['funnel'], { ...remoteEnv, PROVISIOND_API_KEY: wrongKey });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`provisiond: ${expected.code}: ${expected.message}\n`);
    expect(run.stdout + run.stderr).not.toContain(wrongKey);
    // the key on the command line: the same
    const flag = await cli(['devices', 'list', '--url', ts.running.httpUrl, '--key', wrongKey]);
    expect(flag.code).toBe(1);
    expect(flag.stderr).toContain(`provisiond: ${expected.code}:`);
    // a service that is not there
    const gone = await cli(['funnel', '--url', 'http://127.0.0.1:9', '--key', wrongKey]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/^provisiond: UNREACHABLE: /);
  });

  it('demo still runs; simulate runs the fleet simulator', async () => {
    const run = await cli(['demo', '--devices', '2', '--concurrency', '2', '--json', '--data-dir', join(dir, 'demo')]);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout.trim().split('\n').pop()!)).toMatchObject({ failed: 0 });

    const report = join(dir, 'fleet.json');
    // the CLI's client variables do not reach the throw-away service's configuration
    const sim = await cli(['simulate', '--local', '--devices', '2', '--quiet', '--json', report], remoteEnv);
    expect(sim.code, sim.stderr).toBe(0);
    expect(JSON.parse(await readFile(report, 'utf8'))).toMatchObject({ summary: { failed: 0 } });
    const usage = await cli(['simulate', '--devices', 'x']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('usage: provisiond simulate');
  }, 90_000);
});
