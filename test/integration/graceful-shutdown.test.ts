/**
 * Graceful shutdown of a real provisiond process (SIGTERM), in the middle of a provisioning run:
 *  - the HTTP and MQTT listeners stop accepting at once (new connections refused) while the work
 *    in hand goes on: a zero-touch CSR held inside the service (its pre-provisioning webhook,
 *    played by the test, has not answered yet) and a bulk import both finish with complete
 *    answers, within shutdownGraceSeconds, and the process exits 0;
 *  - the store is consistent at once (test/helpers/store-consistency.ts), and a restarted service
 *    lets every interrupted device finish;
 *  - past the grace the process exits 0 anyway, and the enrollment it cut short left nothing
 *    behind (it succeeds after a restart);
 *  - a second SIGTERM during the grace exits at once (status 143);
 *  - in process, with the issuance commit held at the store seam past the grace: a CSR whose
 *    certificate was signed but not committed leaves its token unused, one committed but never
 *    answered is answered after the restart when the device re-presents its token (§15).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { SimDevice, makeKeyAndCsr } from '../../firmware-sim/index.js';
import type { ClaimResponse, DeviceImportResult, MqttCsrAccepted, MqttError } from '../../schemas/types.js';
import { createStore, type Store } from '../../src/store/index.js';
import { bootstrapCsrOnce, sleep } from '../helpers/bootstrap.js';
import { registerAndClaim } from '../helpers/device.js';
import { createRoleKeys, startServiceProcess, type RoleKeys, type ServiceProcess } from '../helpers/process.js';
import { freePort, startRedisServer } from '../helpers/redis-server.js';
import { newTrace, pool, provisionResilient, type UnitTrace } from '../helpers/resilient-device.js';
import { startTestService } from '../helpers/service.js';
import { checkStoreConsistency } from '../helpers/store-consistency.js';
import { waitUntil } from '../helpers/wait.js';

const ADMIN_KEY = `pdk_test_admin_${randomBytes(16).toString('hex')}`;
const PATH = ['registered', 'claimed', 'identity_issued', 'configuring', 'provisioned'] as const;

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
}, 60_000);

/** A data directory (and a Redis), fixed ports and a way to (re)start the service on them. */
async function deployment(name: string, settings: Record<string, unknown> = {}, kind: 'sqlite' | 'redis' = 'sqlite') {
  const dataDir = await mkdtemp(join(tmpdir(), `provisiond-${name}-`));
  cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
  const [httpPort, mqttPort] = [await freePort(), await freePort()];
  const redis = kind === 'redis' ? await startRedisServer() : undefined;
  if (redis) cleanup.push(() => redis.stop());
  const prefix = `${name}:`;
  if (redis) settings = { ...settings, store: { kind: 'redis', redisUrl: redis.url, redisPrefix: prefix } };
  let n = 0;
  const start = async (extra: Record<string, unknown> = {}) => {
    const p = await startServiceProcess({
      name: `${name}#${n++}`,
      dataDir,
      settings: { adminApiKey: ADMIN_KEY, logLevel: 'warn', http: { port: httpPort }, mqtt: { port: mqttPort }, est: { enabled: false }, ...settings, ...extra },
    });
    cleanup.push(() => p.stop(5000));
    return p;
  };
  const openStore = async (): Promise<Store> => {
    const store = createStore(redis ? { kind: 'redis', url: redis.url, prefix } : { kind: 'sqlite', file: join(dataDir, 'provisiond.db') });
    await store.start();
    return store;
  };
  return { dataDir, httpPort, mqttPort, mqttUrl: `mqtts://localhost:${mqttPort}`, start, openStore };
}

/** The exit of a process (code, signal) and when it came. */
async function exitOf(p: ServiceProcess, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }> {
  await waitUntil(() => p.exit !== undefined, `${p.name} exits`, timeoutMs);
  return { ...p.exit!, at: Date.now() };
}

/** Whether a new TCP connection to the port is refused. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/** Zero-touch for the default tenant: a manufacturer CA (openssl), and a pre-provisioning webhook the test answers when it wants. */
async function zeroTouch(p: ServiceProcess, keys: RoleKeys) {
  const dir = await mkdtemp(join(tmpdir(), 'gs-zt-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { cwd: dir, stdio: 'pipe' });
  sh('openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/O=Fab/CN=Fab Birth CA" -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign');
  const ca = await p.request('POST', '/v1/tenant/manufacturer-cas', { key: keys.admin, body: { id: 'fab', name: 'Fab', certificate: await readFile(join(dir, 'ca.pem'), 'utf8') } });
  expect(ca.status, ca.text).toBe(201);

  // the webhook: every question waits until answered by the test
  const asked: { deviceId: string; answer: (allow: boolean) => void }[] = [];
  let onAsked: (() => void) | undefined;
  const hook = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const { deviceId } = JSON.parse(body) as { deviceId: string };
      asked.push({ deviceId, answer: (allow) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ allow })) });
      onAsked?.();
    });
  });
  await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
  cleanup.push(async () => {
    hook.closeAllConnections();
    await new Promise((resolve) => hook.close(resolve));
  });
  const url = `http://127.0.0.1:${(hook.address() as { port: number }).port}/check`;
  const patch = await p.request('PATCH', '/v1/tenant', { key: keys.admin, body: { preprovisionWebhook: { url, timeoutMs: 30_000 } } });
  expect(patch.status, patch.text).toBe(200);

  let serial = 0x1000;
  return {
    asked,
    /** Resolves once the webhook was asked about `deviceId` (its CSR is then inside the service). */
    waitAsked: (deviceId: string) =>
      new Promise<void>((resolve) => {
        const check = () => asked.some((a) => a.deviceId === deviceId) && resolve();
        onAsked = check;
        check();
      }),
    /** A device registered with a birth certificate from the fab. */
    device: async (svc: ServiceProcess, id: string) => {
      const hex = (serial++).toString(16);
      sh(`openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=${id}" -keyout ${id}.key -out ${id}.csr`);
      sh(`openssl x509 -req -in ${id}.csr -CA ca.pem -CAkey ca.key -set_serial 0x${hex} -days 30 -out ${id}.pem`);
      const res = await svc.request('POST', '/v1/devices', { key: keys.factory, body: { id, model: 'camera', birthSerial: hex } });
      expect(res.status, res.text).toBe(201);
      return { id, key: await readFile(join(dir, `${id}.key`), 'utf8'), cert: await readFile(join(dir, `${id}.pem`), 'utf8') };
    },
  };
}

/**
 * An HTTP request whose headers and first half of the body are sent now, the rest when `finish()`
 * is called: in flight (the service has begun it) until then.
 */
async function slowRequest(port: number, path: string, key: string, body: unknown): Promise<{ finish(): void; answer: Promise<{ status: number; text: string }> }> {
  const text = JSON.stringify(body);
  const half = Math.floor(text.length / 2);
  let finish!: () => void;
  const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method: 'POST', path, agent: false, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } },
      (res) => {
        let got = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (got += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: got }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.flushHeaders();
    req.write(text.slice(0, half));
    finish = () => req.end(text.slice(half));
  });
  answer.catch(() => undefined);
  await sleep(200); // headers and the first half are with the service
  return { finish, answer };
}

type Outcome = { kind: 'accepted'; answer: MqttCsrAccepted } | { kind: 'rejected'; code: string } | { kind: 'lost'; reason: string };

/** A zero-touch CSR: birth certificate as the client certificate, a new key's CSR on devices/<id>/csr. */
async function birthCsr(mqttUrl: string, rootPem: string, birth: { id: string; key: string; cert: string }, csrPem: string): Promise<Outcome> {
  const client = mqtt.connect(mqttUrl, { clientId: birth.id, key: birth.key, cert: birth.cert, ca: rootPem, protocolVersion: 4, clean: true, reconnectPeriod: 0, connectTimeout: 10_000 });
  try {
    return await new Promise<Outcome>((resolve) => {
      client.on('error', (err) => resolve({ kind: 'lost', reason: err.message }));
      client.on('close', () => resolve({ kind: 'lost', reason: 'connection closed' }));
      client.on('message', (topic, buf) => {
        const body = JSON.parse(buf.toString()) as MqttCsrAccepted & MqttError;
        if (topic.endsWith('/accepted')) resolve({ kind: 'accepted', answer: body });
        else resolve({ kind: 'rejected', code: body.code });
      });
      client.once('connect', () => {
        client
          .subscribeAsync([`devices/${birth.id}/csr/accepted`, `devices/${birth.id}/csr/rejected`], { qos: 1 })
          .then(() => client.publishAsync(`devices/${birth.id}/csr`, JSON.stringify({ requestId: 'zt', csr: csrPem }), { qos: 1 }))
          .catch((err: Error) => resolve({ kind: 'lost', reason: err.message }));
      });
    });
  } finally {
    client.removeAllListeners('close');
    client.on('error', () => undefined);
    await client.endAsync(true).catch(() => undefined);
  }
}

describe.each(['sqlite', 'redis'] as const)('SIGTERM during a provisioning run, %s store', (kind) => {
  it('stops accepting at once, lets the work in hand finish and answer, exits 0; after a restart every device finishes', { timeout: 180_000 }, async () => {
    const d = await deployment(`graceful-${kind}`, { shutdownGraceSeconds: 10 }, kind);
    const first = await d.start();
    const keys = await createRoleKeys(first, ADMIN_KEY);
    const rootPem = (await first.request('GET', '/v1/ca/root.pem')).text;
    const zt = await zeroTouch(first, keys);
    const birth = await zt.device(first, 'gs-zt-held');

    // a provisioning run through the documented retries (test/helpers/resilient-device.ts)
    const n = 300;
    const ids = Array.from({ length: n }, (_, i) => `gs-run-${String(i).padStart(3, '0')}`);
    const imported = await first.request<DeviceImportResult>('POST', '/v1/devices/import', {
      key: keys.factory,
      body: { devices: [...ids, 'gs-run-slow'].map((id) => ({ id, model: 'thermostat' })) },
    });
    expect(imported.status, imported.text).toBe(200);
    const rows = imported.body.rows.map((r) => ({ id: r.id!, claimCode: r.claimCode! }));
    const slowUnit = rows.find((u) => u.id === 'gs-run-slow')!;
    const units = rows.filter((u) => u !== slowUnit);
    const traces: UnitTrace[] = units.map((u) => newTrace(u.id));
    const run = pool(units, 40, (unit, i) => provisionResilient(unit, traces[i]!, { httpUrl: () => `http://127.0.0.1:${d.httpPort}`, installerKey: keys.installer, viewerKey: keys.viewer }));
    run.catch(() => undefined);
    const provisioned = () => traces.filter((t) => t.provisioned).length;
    await waitUntil(() => provisioned() >= 60, '60 devices provisioned', 60_000);

    // work in hand at the signal: a zero-touch CSR waiting for its webhook, and a claim whose
    // request has begun (headers sent) but whose body is still on its way
    const key = await makeKeyAndCsr(birth.id);
    const held = birthCsr(d.mqttUrl, rootPem, birth, key.csrPem);
    await zt.waitAsked(birth.id);
    const slow = await slowRequest(d.httpPort, '/v1/claims', keys.installer, { claimCode: slowUnit.claimCode, owner: 'bob', site: 'lab' });

    const signalAt = Date.now();
    process.kill(first.pid, 'SIGTERM');
    // new connections are refused at once, while the process still works on what it had
    await waitUntil(async () => (await refused(d.httpPort)) && (await refused(d.mqttPort)), 'both listeners refuse new connections', 2000);
    const refusedAfterMs = Date.now() - signalAt;
    expect(first.exit).toBeUndefined();
    await sleep(500);
    slow.finish(); // the rest of the claim's body, 0.5 s after the signal
    await sleep(500);
    expect(first.exit).toBeUndefined(); // the held CSR keeps it
    expect(await refused(d.mqttPort)).toBe(true);
    zt.asked.find((a) => a.deviceId === birth.id)!.answer(true);

    // the work in hand finished with complete answers, then the process exited 0 within the grace
    const answer = await held;
    expect(answer.kind, JSON.stringify(answer)).toBe('accepted');
    const claimed = await slow.answer;
    expect(claimed.status, claimed.text).toBe(201);
    const slowBootstrap = (JSON.parse(claimed.text) as ClaimResponse).bootstrap!;
    expect(slowBootstrap.token).toBeTruthy();
    const exit = await exitOf(first, 15_000);
    expect({ code: exit.code, signal: exit.signal }, first.output().slice(-3000)).toEqual({ code: 0, signal: null });
    const stopSeconds = (exit.at - signalAt) / 1000;
    expect(stopSeconds).toBeLessThan(10);

    // the store as the stop left it: consistent, the held device has the certificate it was sent
    const heldMap = () => new Map(traces.filter((t) => t.held).map((t) => [t.id, { serial: t.held!.certificate.serial, pem: t.held!.certificate.certificate }]));
    let store = await d.openStore();
    try {
      const midway = await checkStoreConsistency(store, { ids: [...ids, slowUnit.id], prefix: 'gs-run-', held: heldMap() });
      expect(midway.problems).toEqual([]);
      expect(await store.getDevice(birth.id)).toMatchObject({ state: 'identity_issued', certificateSerial: answer.kind === 'accepted' ? answer.answer.serial : '' });
      expect(await store.getDevice(slowUnit.id)).toMatchObject({ state: 'claimed', owner: 'bob' });
    } finally {
      await store.stop();
    }
    const stoppedWith = provisioned();

    // a restarted service lets every interrupted device finish (the drivers retried all along)
    const second = await d.start();
    await run;
    const zeroTouchDevice = new SimDevice({
      deviceId: birth.id,
      model: 'camera',
      broker: { mqttUrl: d.mqttUrl, caCertificate: rootPem },
      identity: { keyPem: key.keyPem, certPem: (answer as { answer: MqttCsrAccepted }).answer.certificate, chainPems: (answer as { answer: MqttCsrAccepted }).answer.chain },
    });
    await zeroTouchDevice.run();
    await zeroTouchDevice.stop();
    // the claim answered during the stop is a working one: its device provisions with it
    const slowTrace = newTrace(slowUnit.id);
    await provisionResilient(slowUnit, slowTrace, { httpUrl: () => `http://127.0.0.1:${d.httpPort}`, installerKey: keys.installer, viewerKey: keys.viewer, bootstrap: slowBootstrap });
    expect(slowTrace.steps.join('; ')).not.toContain('claim');
    expect(await second.stop(20_000)).toEqual({ code: 0, signal: null });

    store = await d.openStore();
    try {
      const all = [...ids, slowUnit.id];
      const held = new Map([...heldMap(), [slowUnit.id, { serial: slowTrace.held!.certificate.serial, pem: slowTrace.held!.certificate.certificate }]]);
      const end = await checkStoreConsistency(store, { ids: all, prefix: 'gs-run-', state: 'provisioned', held, path: PATH });
      expect(end.problems).toEqual([]);
      expect(end.certificates).toBe(all.length);
      expect((await store.getDevice(birth.id))?.state).toBe('provisioned');
    } finally {
      await store.stop();
    }
    const lost = { claim: traces.filter((t) => t.lost.claim > 0).length, csr: traces.filter((t) => t.lost.csr > 0).length, session: traces.filter((t) => t.lost.session > 0).length };
    const told = traces.filter((t) => t.steps.some((s) => /SERVICE_STOPPING|CONNACK 3/.test(s))).length;
    console.info(
      `graceful-shutdown ${kind}: new connections refused ${refusedAfterMs} ms after SIGTERM; exit 0 ${stopSeconds.toFixed(2)} s after it (held CSR released at 1 s); ` +
        `${stoppedWith} of ${n} provisioned when it stopped, all after the restart; devices that retried: claim ${lost.claim}, CSR ${lost.csr}, session ${lost.session} (${told} told SERVICE_STOPPING or CONNACK 3)`,
    );
  });
});

describe('SIGTERM', () => {
  it('past shutdownGraceSeconds it exits 0 anyway; the CSR it cut short left nothing behind and succeeds after a restart', { timeout: 90_000 }, async () => {
    const d = await deployment('grace-over', { shutdownGraceSeconds: 1 });
    const first = await d.start();
    const keys = await createRoleKeys(first, ADMIN_KEY);
    const rootPem = (await first.request('GET', '/v1/ca/root.pem')).text;
    const zt = await zeroTouch(first, keys);
    const birth = await zt.device(first, 'gs-zt-cut');
    const key = await makeKeyAndCsr(birth.id);

    const cut = birthCsr(d.mqttUrl, rootPem, birth, key.csrPem);
    await zt.waitAsked(birth.id); // and never answered
    const signalAt = Date.now();
    process.kill(first.pid, 'SIGTERM');
    const exit = await exitOf(first, 15_000);
    expect({ code: exit.code, signal: exit.signal }, first.output().slice(-3000)).toEqual({ code: 0, signal: null });
    const stopSeconds = (exit.at - signalAt) / 1000;
    expect(stopSeconds).toBeGreaterThanOrEqual(1);
    expect(stopSeconds).toBeLessThan(6); // the grace, the connections' and the store's closing
    expect((await cut).kind).toBe('lost'); // no answer: nothing was issued

    const store = await d.openStore();
    try {
      expect(await store.getDevice(birth.id)).toMatchObject({ state: 'registered' });
      expect((await store.getDevice(birth.id))?.certificateSerial).toBeUndefined();
      expect(await store.listCertificates(birth.id)).toEqual([]);
    } finally {
      await store.stop();
    }
    const second = await d.start();
    const retried = birthCsr(d.mqttUrl, rootPem, birth, key.csrPem);
    await waitUntil(() => zt.asked.filter((a) => a.deviceId === birth.id).length === 2, 'the webhook is asked again', 10_000);
    zt.asked.at(-1)!.answer(true);
    expect((await retried).kind).toBe('accepted');
    expect(await second.stop(20_000)).toEqual({ code: 0, signal: null });
    console.info(`graceful-shutdown: grace 1 s over with a CSR in hand: exit 0 ${stopSeconds.toFixed(2)} s after SIGTERM`);
  });

  it('a second SIGTERM during the grace exits at once with status 143', { timeout: 60_000 }, async () => {
    const d = await deployment('second-signal', { shutdownGraceSeconds: 20 });
    const first = await d.start();
    const keys = await createRoleKeys(first, ADMIN_KEY);
    const rootPem = (await first.request('GET', '/v1/ca/root.pem')).text;
    const zt = await zeroTouch(first, keys);
    const birth = await zt.device(first, 'gs-zt-twice');
    const key = await makeKeyAndCsr(birth.id);
    const held = birthCsr(d.mqttUrl, rootPem, birth, key.csrPem);
    await zt.waitAsked(birth.id);
    process.kill(first.pid, 'SIGTERM');
    await waitUntil(() => refused(d.mqttPort), 'the broker refuses new connections', 2000);
    expect(first.exit).toBeUndefined();
    const secondAt = Date.now();
    process.kill(first.pid, 'SIGTERM');
    const exit = await exitOf(first, 5000);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 143, signal: null });
    expect(exit.at - secondAt).toBeLessThan(1000);
    expect((await held).kind).toBe('lost');
    expect(first.output()).toContain('SIGTERM while stopping, exiting at once');

    // as after a crash: nothing half-done (the device was never enrolled)
    const store = await d.openStore();
    try {
      expect(await store.getDevice(birth.id)).toMatchObject({ state: 'registered' });
      expect(await store.listCertificates(birth.id)).toEqual([]);
    } finally {
      await store.stop();
    }
  });
});

describe('an issuance commit held past the grace (in process, held at the store seam)', () => {
  /**
   * The service's store with commitIssuance held at a gate, before or after the real commit: the
   * one way to stop a shutdown at that instant on purpose (a real store commits in microseconds).
   */
  async function held(when: 'before' | 'after') {
    const dataDir = await mkdtemp(join(tmpdir(), `provisiond-held-${when}-`));
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const mqttPort = await freePort();
    const settings = { shutdownGraceSeconds: 1, mqtt: { port: mqttPort } };
    const ts = await startTestService(settings, { dataDir });
    const { id, bootstrap } = await registerAndClaim(ts);
    const store = ts.running.store;
    const commit = store.commitIssuance.bind(store);
    let reached!: () => void;
    const atGate = new Promise<void>((resolve) => (reached = resolve));
    store.commitIssuance = async (c) => {
      reached();
      if (when === 'after') await commit(c);
      await new Promise(() => undefined); // never released: the grace runs out
      return commit(c);
    };
    const { csrPem } = await makeKeyAndCsr(id);
    const first = bootstrapCsrOnce(bootstrap.mqttUrl, bootstrap, csrPem, { requestId: 'r1', timeoutMs: 15_000 });
    await atGate; // the certificate is signed; the commit is held
    const stopAt = Date.now();
    await ts.running.stop();
    const stopSeconds = (Date.now() - stopAt) / 1000;
    const outcome = await first;
    const again = await startTestService(settings, { dataDir });
    cleanup.push(() => again.stop());
    return { id, bootstrap, csrPem, outcome, stopSeconds, again };
  }

  it('signed but not committed: no answer, nothing recorded, the token unused; the same CSR gets a certificate after the restart', { timeout: 60_000 }, async () => {
    const { id, bootstrap, csrPem, outcome, stopSeconds, again } = await held('before');
    expect(outcome.kind).toBe('lost');
    expect(stopSeconds).toBeGreaterThanOrEqual(1);
    expect(stopSeconds).toBeLessThan(5);
    const device = await again.running.store.getDevice(id);
    expect(device).toMatchObject({ state: 'claimed' });
    expect(device?.certificateSerial).toBeUndefined();
    expect(await again.running.store.listCertificates(id)).toEqual([]);
    expect((await again.running.store.getBootstrapToken(device!.bootstrapJti!))?.consumedAt).toBeUndefined();
    const retry = await bootstrapCsrOnce(bootstrap.mqttUrl, bootstrap, csrPem, { requestId: 'r2' });
    expect(retry.kind).toBe('accepted');
    expect((await again.running.store.getDevice(id))?.certificateSerial).toBe(retry.kind === 'accepted' ? retry.answer.serial : '');
  });

  it('committed but never answered: the token re-presented after the restart brings the same certificate (§15)', { timeout: 60_000 }, async () => {
    const { id, bootstrap, csrPem, outcome, again } = await held('after');
    expect(outcome.kind).toBe('lost');
    const device = await again.running.store.getDevice(id);
    expect(device).toMatchObject({ state: 'identity_issued' });
    const certificates = await again.running.store.listCertificates(id);
    expect(certificates.map((c) => [c.serial, c.status])).toEqual([[device!.certificateSerial, 'active']]);
    expect((await again.running.store.getBootstrapToken(device!.bootstrapJti!))?.certificateSerial).toBe(device!.certificateSerial);
    const retry = await bootstrapCsrOnce(bootstrap.mqttUrl, bootstrap, csrPem, { requestId: 'r2' });
    expect(retry.kind).toBe('accepted');
    expect(retry.kind === 'accepted' && retry.answer.serial).toBe(device!.certificateSerial);
    expect(await again.running.store.listCertificates(id)).toHaveLength(1);
  });
});
