/**
 * Fuzzes every payload a device or a hub publishes, over real TLS connections to a real service
 * (SQLite in a temp dir): the bootstrap CSR, the operational configuration acknowledgement,
 * telemetry and renewal CSR, and a hub's claim and its children's relayed CSR and
 * acknowledgement; valid and invalid payloads generated from schemas/mqtt-*.json
 * (test/helpers/schema-arbitrary.ts) and transport-level mutations (not JSON, empty, truncated,
 * invalid UTF-8, over mqtt.maxPayloadBytes, ...). Then forbidden topics, fuzzed CONNECT
 * credentials and bytes that are not MQTT.
 *
 * Invariants: every message that is not accepted gets its coded answer (schemas/mqtt-error.json
 * on csr/rejected, errors, hub/claim/rejected or the child's equivalent, with a code documented in
 * docs/protocol.md §19.2 or docs/hubs.md, and the topic it answers), or the documented CONNACK
 * or disconnect (§19.1, §19.3); a rejected message changes nothing stored (whole-store digest);
 * the service stays up; afterwards each identity still provisions with valid messages.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import fc from 'fast-check';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, SimHub, makeKeyAndCsr } from '../../firmware-sim/index.js';
import type { ClaimResponse, MqttError } from '../../schemas/types.js';
import { schemaRef, type SchemaName } from '../../src/schemas.js';
import { NETWORK, connectBootstrap, connectOperational, corruptSignature, opensslCsrForKey } from '../helpers/device.js';
import { FUZZ_RUNS, StoreWatch, brief, documentedDeviceCodes, documentedHubCodes, fuzzParams, fuzzTimeout, fuzzService } from '../helpers/fuzz.js';
import { SchemaArbitraries, rawJsonVariants, toJsonText } from '../helpers/schema-arbitrary.js';
import { startTestService, type TestService } from '../helpers/service.js';

const MAX_PAYLOAD = 24 * 1024;
const HUGE = MAX_PAYLOAD + 1500;
const arbs = new SchemaArbitraries();
const deviceCodes = documentedDeviceCodes();
const hubCodes = documentedHubCodes();
/** What a payload of the wrong shape is answered. */
const SHAPE = ['SCHEMA_INVALID', 'MALFORMED_JSON', 'PAYLOAD_TOO_LARGE'];

let ts: TestService;
let watch: StoreWatch;
const auth = (key: string) => ({ authorization: `Bearer ${key}` });

interface Identity {
  id: string;
  keyPem: string;
  certPem: string;
}
let boot: { id: string; bootstrap: NonNullable<ClaimResponse['bootstrap']> };
let op: Identity;
let op2: Identity;
let hub: Identity;
const CHILD = 'fz-child';
/** Devices a hub may claim: registered, with these codes. */
const claimable = Array.from({ length: 6 }, (_, i) => ({ id: `fz-hc-${i}`, claimCode: `fuzz-hub-claim-${i}-abcd` }));
/** CSRs that no identity accepts: garbage, bad signature, another device's key, unsupported keys, a certificate. */
const refusedCsrs: string[] = [];

async function register(id: string, claimCode: string, extra: Record<string, unknown> = {}) {
  const res = await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(ts.keys.factory), payload: { id, model: 'thermostat', claimCode, ...extra } });
  expect(res.statusCode, res.body).toBe(201);
}

async function claimed(id: string, extra: Record<string, unknown> = {}) {
  const claimCode = `fuzz-${id}-code-1234`;
  await register(id, claimCode, extra);
  const res = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode, owner: 'o', site: 's', network: NETWORK } });
  expect(res.statusCode, res.body).toBe(201);
  return (res.json() as ClaimResponse).bootstrap!;
}

async function provisioned(id: string, asHub = false): Promise<Identity> {
  const bootstrap = await claimed(id, asHub ? { hub: true } : {});
  const device = asHub ? new SimHub({ deviceId: id, bootstrap }) : new SimDevice({ deviceId: id, model: 'thermostat', bootstrap });
  await device.run();
  const identity = { id, keyPem: device.keyPem, certPem: device.certificatePem };
  await device.stop();
  return identity;
}

/** The same request with its last 10 bytes cut off (not parsable). */
function truncatedDer(pem: string): string {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${der.subarray(0, der.length - 10).toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
}

function opensslPems(): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'fuzz-csr-'));
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  try {
    run(['req', '-new', '-newkey', 'ed25519', '-nodes', '-subj', '/CN=x', '-keyout', 'a.key', '-out', 'ed.csr']);
    run(['req', '-new', '-newkey', 'rsa:1024', '-nodes', '-subj', '/CN=x', '-keyout', 'b.key', '-out', 'rsa1024.csr']);
    run(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1', '-nodes', '-subj', '/CN=x', '-keyout', 'c.key', '-out', 'k1.csr']);
    run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=x', '-days', '1', '-keyout', 'd.key', '-out', 'cert.pem']);
    return ['ed.csr', 'rsa1024.csr', 'k1.csr', 'cert.pem'].map((f) => readFileSync(join(dir, f), 'utf8'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

beforeAll(async () => {
  ts = await startTestService(fuzzService({ mqtt: { maxPayloadBytes: MAX_PAYLOAD }, claims: { maxFailedAttempts: 1000, lockoutSeconds: 1 } }));
  watch = new StoreWatch(ts.running.store).instrument();
  [op, op2, hub] = await Promise.all([provisioned('fz-op'), provisioned('fz-op2'), provisioned('fz-hub', true)]);
  boot = { id: 'fz-boot', bootstrap: await claimed('fz-boot') };
  for (const c of claimable) await register(c.id, c.claimCode);
  await register(CHILD, 'fuzz-child-code-1234');
  await register('fz-not-mine', 'fuzz-not-mine-code-1234');
  const fresh = await makeKeyAndCsr('whatever');
  refusedCsrs.push(
    corruptSignature(fresh.csrPem),
    opensslCsrForKey(op2.keyPem, '/CN=fz-op2'),
    `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.alloc(180, 7).toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`,
    truncatedDer(fresh.csrPem),
    ...opensslPems(),
  );
}, 120_000);

afterAll(async () => {
  await ts?.stop();
});

// ------------------------------------------------------------ connections

/** A client with an inbox: every message it receives, in order. reopen() connects again (after a documented disconnect). */
class Conn {
  client!: MqttClient;
  inbox: { topic: string; payload: Buffer }[] = [];

  constructor(
    private readonly connect: () => Promise<MqttClient>,
    private readonly topics: string[],
  ) {}

  async reopen(): Promise<void> {
    this.client?.end(true);
    const client = await this.connect();
    this.client = client;
    this.inbox = [];
    client.on('message', (topic, payload) => this.inbox.push({ topic, payload }));
    client.on('error', () => undefined);
    const granted = await client.subscribeAsync(this.topics, { qos: 1 });
    expect(granted.map((g) => g.qos)).not.toContain(128);
  }

  /** Ends the connection without waiting for messages in flight. */
  close(): void {
    this.client.end(true);
  }
}

async function open(connect: () => Promise<MqttClient>, topics: string[]): Promise<Conn> {
  const conn = new Conn(connect, topics);
  await conn.reopen();
  return conn;
}

const operational = (who: Identity, leaves: string[]) => open(() => connectOperational(ts, who.id, who.keyPem, who.certPem), leaves.map((l) => `devices/${who.id}/${l}`));

const TIMED_OUT = Symbol('timed out');
async function within<T>(promise: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<typeof TIMED_OUT>((resolve) => (timer = setTimeout(() => resolve(TIMED_OUT), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitFor<T>(check: () => T | undefined, timeoutMs: number): Promise<T | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined || Date.now() > until) return v;
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Connects and answers the CONNACK return code (0: accepted), or 'closed' when the connection ends without one. */
function connectOutcome(opts: IClientOptions): Promise<number | 'closed'> {
  const client = mqtt.connect(ts.mqttUrl, { protocolVersion: 4, clean: true, reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  return new Promise<number | 'closed'>((resolve) => {
    client.once('connect', () => resolve(0));
    client.once('error', (err) => {
      const code = (err as { code?: unknown }).code;
      resolve(typeof code === 'number' ? code : 'closed');
    });
    client.once('close', () => resolve('closed'));
  }).finally(() => client.end(true));
}

/** Whether two JWTs decode to the same bytes, segment by segment. */
function sameToken(a: string, b: string): boolean {
  const parts = (t: string) => t.split('.').map((p) => Buffer.from(p, 'base64url').toString('hex'));
  return /^[A-Za-z0-9_.-]*$/.test(a) && parts(a).join('.') === parts(b).join('.');
}

// ---------------------------------------------------------------- cases

interface PayloadCase {
  kind: string;
  payload: string | Buffer;
  /** The packet announces more than twice mqtt.maxPayloadBytes: the connection is closed unread (§19.5). */
  closes?: boolean;
  /** Must be refused with one of these codes; 'any': valid, any documented answer. */
  expect: readonly string[] | 'any';
  /** requestId the answer must echo. */
  requestId?: string;
}

interface Family {
  name: string;
  schema: SchemaName;
  overrides?: () => Record<string, fc.Arbitrary<unknown>>;
  /** Where the answers come: ok and refused. */
  /** Where it is published. */
  topic: string;
  accepted: string;
  rejected: string;
  /** Valid payloads get no answer when they succeed (telemetry). */
  silentWhenAccepted?: boolean;
  codes: Set<string>;
  /** Refusals that come before the payload is read (a hub relaying for a device that is not its child). */
  refusedFirst?: string[];
}

/** The requestId a CSR or claim payload carries when it is readable (what the answer echoes). */
function readableRequestId(payload: string | Buffer): string | undefined {
  try {
    const v = JSON.parse(payload.toString()) as { requestId?: unknown };
    return typeof v?.requestId === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(v.requestId) ? v.requestId : undefined;
  } catch {
    return undefined;
  }
}

function payloadCases(f: Family): fc.Arbitrary<PayloadCase> {
  const options = { overrides: f.overrides?.() ?? {}, hugeLength: HUGE };
  const SHAPE_CODES = [...SHAPE, ...(f.refusedFirst ?? [])];
  const valid = arbs.valid(schemaRef(f.schema), options);
  const validator = arbs.validator(arbs.locate(schemaRef(f.schema)));
  // whatever its shape, a payload over mqtt.maxPayloadBytes is refused before it is read, and a
  // packet announcing more than twice that closes the connection (§19.5; the packet's remaining
  // length is the topic with its length, the packet id and the payload)
  const sized = (c: PayloadCase): PayloadCase => {
    const bytes = Buffer.byteLength(c.payload);
    if (2 + Buffer.byteLength(f.topic) + 2 + bytes > 2 * MAX_PAYLOAD) return { ...c, closes: true };
    return bytes > MAX_PAYLOAD ? { ...c, expect: ['PAYLOAD_TOO_LARGE', ...(f.refusedFirst ?? [])] } : c;
  };
  return fc.oneof(
    { weight: 25, arbitrary: valid.map((v): PayloadCase => ({ kind: 'valid', payload: toJsonText(v), expect: 'any' })) },
    { weight: 45, arbitrary: arbs.invalid(schemaRef(f.schema), options).map((m): PayloadCase => ({ kind: m.mutation, payload: toJsonText(m.value), expect: SHAPE_CODES })) },
    {
      weight: 20,
      arbitrary: rawJsonVariants(valid).map((v): PayloadCase => {
        // what JSON.parse makes of it decides; then the schema (an own __proto__ key is data there)
        let parsed: { ok: boolean; value?: unknown } = { ok: false };
        try {
          parsed = { ok: true, value: JSON.parse(v.body.toString()) };
        } catch {
          // not JSON
        }
        const acceptable = parsed.ok && validator(parsed.value);
        return { kind: `raw: ${v.mutation}`, payload: v.body, expect: acceptable ? 'any' : SHAPE_CODES };
      }),
    },
    {
      weight: 3,
      arbitrary: fc.integer({ min: MAX_PAYLOAD + 1, max: MAX_PAYLOAD + 4000 }).map((n): PayloadCase => ({ kind: 'over maxPayloadBytes', payload: Buffer.alloc(n, 0x20), expect: ['PAYLOAD_TOO_LARGE', ...(f.refusedFirst ?? [])] })),
    },
    { weight: 2, arbitrary: fc.constant<PayloadCase>({ kind: 'empty payload', payload: Buffer.alloc(0), expect: ['MALFORMED_JSON', ...(f.refusedFirst ?? [])] }) },
    { weight: 1, arbitrary: fc.integer({ min: 2 * MAX_PAYLOAD + 1, max: 2 * MAX_PAYLOAD + 5000 }).map((n): PayloadCase => ({ kind: 'packet over twice maxPayloadBytes', payload: Buffer.alloc(n, 0x7b), expect: [] })) },
  ).map(sized);
}

/**
 * Publishes every case on `topic` over one connection, one at a time, and checks its answer: the
 * answer arrives before the PUBACK (docs/protocol.md §4), so each message is answered before the
 * next is sent; a valid telemetry message gets none.
 */
async function fuzzFamily(conn: Conn, f: Family, runs: number) {
  const topic = f.topic;
  const kinds: Record<string, number> = {};
  const outcomes: Record<string, number> = {};
  let quiet = 0;
  await watch.reset();
  await fc.assert(
    fc.asyncProperty(payloadCases(f), async (c) => {
      const kind = c.kind.replace(/ at .*$/, '');
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      const where = (why: string, answer?: { topic: string; payload: Buffer }) =>
        new Error(`${f.name}: ${why}\n  case: ${c.kind} ${brief(c.payload, 400)}\n  answer: ${answer ? `${answer.topic} ${brief(answer.payload.toString(), 400)}` : '(none)'}`);
      if (conn.inbox.length > 0) throw where('an answer nobody asked for (to the case before?)', conn.inbox[0]);
      if (!conn.client.connected) throw where('the connection is closed');
      const writes = watch.writes;
      if (c.closes) {
        // §19.5: the connection is closed, nothing answered, nothing changes; connect again
        const closed = new Promise<void>((resolve) => conn.client.once('close', () => resolve()));
        conn.client.publish(topic, c.payload, { qos: 1 });
        if ((await within(closed, 5000)) === TIMED_OUT) throw where('a packet over twice maxPayloadBytes did not close the connection');
        if (conn.inbox.length > 0) throw where('an answer to a packet that closes the connection', conn.inbox[0]);
        outcomes.closed = (outcomes.closed ?? 0) + 1;
        if (watch.writes !== writes) await watch.expectUnchanged(() => `${f.name}: ${c.kind}`);
        await conn.reopen();
        return;
      }
      const acked = await within(conn.client.publishAsync(topic, c.payload, { qos: 1 }), 5000);
      if (acked === TIMED_OUT) throw where(conn.client.connected ? 'no PUBACK within 5 s' : 'the connection was closed', conn.inbox[0]);
      const silent = f.silentWhenAccepted && c.expect === 'any';
      const answer = silent ? conn.inbox.shift() : await waitFor(() => conn.inbox.shift(), 5000);
      if (silent) {
        if (answer) throw where('an answer to a valid message that gets none', answer);
        outcomes.silent = (outcomes.silent ?? 0) + 1;
      } else if (!answer) throw where('no answer within 5 s');
      let rejected = false;
      if (answer) {
        let body: Record<string, unknown>;
        try {
          body = JSON.parse(answer.payload.toString('utf8')) as Record<string, unknown>;
        } catch {
          throw where('an answer that is not JSON', answer);
        }
        if (answer.topic === f.rejected) {
          rejected = true;
          const err = body as unknown as MqttError;
          if (!arbs.validator(arbs.locate(schemaRef('mqtt-error')))(err)) throw where('an error that is not schemas/mqtt-error.json', answer);
          if (!f.codes.has(err.code)) throw where(`undocumented code ${err.code}`, answer);
          if (err.topic !== topic) throw where(`the error names topic ${err.topic}`, answer);
          // §19.2: a CSR's requestId is echoed whenever it can be read (not from a payload over the size limit)
          const rid = f.schema === 'mqtt-csr-request' && err.code !== 'PAYLOAD_TOO_LARGE' ? readableRequestId(c.payload) : undefined;
          if (rid !== undefined && err.requestId !== rid && !['INTERNAL_ERROR', 'TOPIC_FORBIDDEN'].includes(err.code)) throw where('the error does not echo the requestId', answer);
          if (c.expect !== 'any' && !c.expect.includes(err.code)) throw where(`code ${err.code}, expected ${c.expect.join('|')}`, answer);
          outcomes[err.code] = (outcomes[err.code] ?? 0) + 1;
        } else if (answer.topic === f.accepted) {
          if (c.expect !== 'any') throw where(`accepted a message that must be refused (${c.expect.join('|')})`, answer);
          outcomes.accepted = (outcomes.accepted ?? 0) + 1;
        } else throw where('an answer on an unexpected topic', answer);
      }
      if (watch.writes !== writes) {
        if (rejected) await watch.expectUnchanged(() => `${f.name}: ${c.kind} ${brief(c.payload)} -> ${brief(answer?.payload.toString())}`);
        else await watch.reset();
        quiet = 0;
      } else if (++quiet >= 250) {
        quiet = 0;
        await watch.expectUnchanged(() => `${f.name}: one of the last 250 messages (none called a writing store method)`);
      }
    }),
    fuzzParams(runs),
  );
  await new Promise((r) => setTimeout(r, 100));
  expect(conn.inbox, 'answers after the last message').toEqual([]);
  await watch.expectUnchanged(() => `${f.name}: the last messages`);
  if (process.env.PROVISIOND_FUZZ_VERBOSE) process.stderr.write(`${f.name}: ${JSON.stringify(outcomes)} ${JSON.stringify(kinds)}\n`);
  return outcomes;
}

const csrOverrides = () => ({ csr: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...refusedCsrs) }, { weight: 1, arbitrary: fc.string({ minLength: 100, maxLength: 400 }) }) });
const ackOverrides = (version: () => number, ids: () => string[]) => () => ({
  version: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(version(), version() + 1, Math.max(1, version() - 1), 1) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 ** 31 }) }),
  'items[].id': fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...ids()) }, { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 64 }) }),
});

/** The configuration document (JWS) the device was last sent. */
async function currentConfig(deviceId: string): Promise<{ version: number; ids: string[] }> {
  const device = await ts.running.store.getDevice(deviceId);
  return { version: device?.config?.version ?? 1, ids: device?.config?.items.map((i) => i.id) ?? ['network', 'security'] };
}

// ------------------------------------------------------------------ tests

describe('MQTT payload fuzzing', () => {
  it('bootstrap session: csr', async () => {
    const t = (l: string) => `devices/${boot.id}/${l}`;
    const conn = await open(() => connectBootstrap(ts, boot.bootstrap), [t('csr/accepted'), t('csr/rejected'), t('errors')]);
    try {
      await fuzzFamily(conn, { topic: t('csr'), name: 'bootstrap csr', schema: 'mqtt-csr-request', overrides: csrOverrides, accepted: t('csr/accepted'), rejected: t('csr/rejected'), codes: deviceCodes }, FUZZ_RUNS);
    } finally {
      conn.close();
    }
    // the credential still works: the device provisions
    const device = new SimDevice({ deviceId: boot.id, model: 'thermostat', bootstrap: boot.bootstrap });
    await device.run();
    await device.stop();
    expect((await ts.running.store.getDevice(boot.id))?.state).toBe('provisioned');
  }, fuzzTimeout(5));

  it('operational session: config/ack', async () => {
    const conn = await operational(op, ['state', 'errors', 'csr/accepted', 'csr/rejected']);
    const t = (l: string) => `devices/${op.id}/${l}`;
    try {
      let doc = await currentConfig(op.id);
      await fuzzFamily(
        conn,
        { topic: t('config/ack'), name: 'config/ack', schema: 'mqtt-config-ack', overrides: ackOverrides(() => doc.version, () => [...doc.ids, 'firmware']), accepted: t('state'), rejected: t('errors'), codes: deviceCodes },
        FUZZ_RUNS,
      );
      // a complete acknowledgement still provisions it
      doc = await currentConfig(op.id);
      await conn.client.publishAsync(t('config/ack'), JSON.stringify({ version: doc.version, items: doc.ids.map((id) => ({ id, status: 'applied' })) }), { qos: 1 });
      const state = await waitFor(() => conn.inbox.shift(), 5000);
      expect(state?.topic).toBe(t('state'));
      expect(JSON.parse(state!.payload.toString())).toMatchObject({ state: 'provisioned', pending: [] });
    } finally {
      conn.close();
    }
  }, fuzzTimeout(5));

  it('operational session: telemetry', async () => {
    const conn = await operational(op, ['errors']);
    const t = (l: string) => `devices/${op.id}/${l}`;
    try {
      const out = await fuzzFamily(conn, { topic: t('telemetry'), name: 'telemetry', schema: 'mqtt-telemetry', accepted: '-', rejected: t('errors'), silentWhenAccepted: true, codes: deviceCodes }, FUZZ_RUNS);
      expect(out.silent).toBeGreaterThan(0);
    } finally {
      conn.close();
    }
  }, fuzzTimeout(5));

  it('operational session: renewal csr', async () => {
    const conn = await operational(op, ['csr/accepted', 'csr/rejected', 'errors']);
    const t = (l: string) => `devices/${op.id}/${l}`;
    try {
      await fuzzFamily(conn, { topic: t('csr'), name: 'renewal csr', schema: 'mqtt-csr-request', overrides: csrOverrides, accepted: t('csr/accepted'), rejected: t('csr/rejected'), codes: deviceCodes }, FUZZ_RUNS);
      // a renewal with a new key still works, and the new certificate connects
      const fresh = await makeKeyAndCsr(op.id);
      await conn.client.publishAsync(t('csr'), JSON.stringify({ requestId: 'renew-after-fuzz', csr: fresh.csrPem }), { qos: 1 });
      const answer = await waitFor(() => conn.inbox.shift(), 5000);
      expect(answer?.topic, answer?.payload.toString()).toBe(t('csr/accepted'));
      op = { id: op.id, keyPem: fresh.keyPem, certPem: (JSON.parse(answer!.payload.toString()) as { certificate: string }).certificate };
    } finally {
      conn.close();
    }
    const again = await operational(op, ['state']);
    again.close();
  }, fuzzTimeout(5));

  it('hub: hub/claim', async () => {
    const t = (l: string) => `devices/${hub.id}/${l}`;
    const conn = await operational(hub, ['hub/claim/accepted', 'hub/claim/rejected', 'errors']);
    try {
      // (not the child's code: the hub claims it afterwards, to prove it still can)
      const codes = () => [...claimable.map((c) => c.claimCode), 'fuzz-fz-op-code-1234', 'fuzz-fz-boot-code-1234'];
      await fuzzFamily(
        conn,
        {
          topic: t('hub/claim'),
          name: 'hub/claim',
          schema: 'mqtt-hub-claim',
          overrides: () => ({
            claimCode: fc.oneof({ weight: 1, arbitrary: fc.constantFrom(...codes()) }, { weight: 3, arbitrary: fc.string({ minLength: 1, maxLength: 64 }) }),
            deviceId: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...claimable.map((c) => c.id), CHILD, 'fz-op', 'nobody') }, { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/) }),
          }),
          accepted: t('hub/claim/accepted'),
          rejected: t('hub/claim/rejected'),
          codes: hubCodes,
        },
        FUZZ_RUNS,
      );
      // the hub still claims: its child-to-be
      await conn.client.publishAsync(t('hub/claim'), JSON.stringify({ requestId: 'child', claimCode: 'fuzz-child-code-1234', deviceId: CHILD }), { qos: 1 });
      const answer = await waitFor(() => conn.inbox.shift(), 5000);
      expect(answer?.topic, answer?.payload.toString()).toBe(t('hub/claim/accepted'));
      expect((await ts.running.store.getDevice(CHILD))?.hubId).toBe(hub.id);
      // regression: claiming it again answers a documented code (DEVICE_ALREADY_CLAIMED was not in
      // docs/hubs.md) and stores nothing (a bootstrap token used to be stored first)
      await watch.reset();
      await conn.client.publishAsync(t('hub/claim'), JSON.stringify({ requestId: 'again', claimCode: 'fuzz-child-code-1234', deviceId: CHILD }), { qos: 1 });
      const again = await waitFor(() => conn.inbox.shift(), 5000);
      expect(JSON.parse(again!.payload.toString())).toMatchObject({ code: 'DEVICE_ALREADY_CLAIMED', requestId: 'again' });
      expect(hubCodes.has('DEVICE_ALREADY_CLAIMED')).toBe(true);
      await watch.expectUnchanged(() => 'a hub claim of a device claimed already');
    } finally {
      conn.close();
    }
  }, fuzzTimeout(5));

  it('hub: a child\'s relayed csr and config/ack, then the child provisions', async () => {
    const c = (child: string, l: string) => `devices/${hub.id}/children/${child}/${l}`;
    const children = [CHILD, 'fz-not-mine', 'nobody-at-all'];
    const conn = await operational(hub, children.flatMap((ch) => ['csr/accepted', 'csr/rejected', 'state', 'errors'].map((l) => `children/${ch}/${l}`)));
    try {
      for (const child of children) {
        await fuzzFamily(
          conn,
          { topic: c(child, 'csr'), name: `child ${child} csr`, schema: 'mqtt-csr-request', overrides: csrOverrides, accepted: c(child, 'csr/accepted'), rejected: c(child, 'csr/rejected'), codes: hubCodes, ...(child === CHILD ? {} : { refusedFirst: ['TOPIC_FORBIDDEN'] }) },
          child === CHILD ? FUZZ_RUNS : Math.ceil(FUZZ_RUNS / 10),
        );
        await fuzzFamily(
          conn,
          {
            topic: c(child, 'config/ack'),
            name: `child ${child} config/ack`,
            schema: 'mqtt-config-ack',
            overrides: ackOverrides(() => 1, () => ['network', 'security']),
            accepted: c(child, 'state'),
            rejected: c(child, 'errors'),
            codes: hubCodes,
            ...(child === CHILD ? {} : { refusedFirst: ['TOPIC_FORBIDDEN'] }),
          },
          child === CHILD ? FUZZ_RUNS : Math.ceil(FUZZ_RUNS / 10),
        );
      }
      // the child still provisions through the hub: its CSR, its configuration, its acknowledgement
      const keys = await makeKeyAndCsr(CHILD);
      await conn.client.publishAsync(c(CHILD, 'csr'), JSON.stringify({ requestId: 'child-csr', csr: keys.csrPem }), { qos: 1 });
      const issued = await waitFor(() => conn.inbox.shift(), 5000);
      expect(issued?.topic, issued?.payload.toString()).toBe(c(CHILD, 'csr/accepted'));
      expect(new X509Certificate((JSON.parse(issued!.payload.toString()) as { certificate: string }).certificate).checkPrivateKey(keys.privateKey)).toBe(true);
      await conn.client.subscribeAsync(c(CHILD, 'config'), { qos: 1 });
      const jws = await waitFor(() => conn.inbox.shift(), 5000);
      expect(jws?.topic).toBe(c(CHILD, 'config'));
      const doc = JSON.parse(Buffer.from(jws!.payload.toString().split('.')[1]!, 'base64url').toString()) as { version: number; items: { id: string }[] };
      await conn.client.publishAsync(c(CHILD, 'config/ack'), JSON.stringify({ version: doc.version, items: doc.items.map((i) => ({ id: i.id, status: 'applied' })) }), { qos: 1 });
      const state = await waitFor(() => conn.inbox.shift(), 5000);
      expect(JSON.parse(state!.payload.toString())).toMatchObject({ state: 'provisioned' });
    } finally {
      conn.close();
    }
  }, fuzzTimeout(12));

  it('forbidden topics: the connection is closed, nothing changes, the device reconnects', async () => {
    const own = (l: string) => `devices/${op2.id}/${l}`;
    const topics = fc.oneof(
      fc.constantFrom(own('csr/accepted'), own('csr/rejected'), own('config'), own('state'), own('errors'), own('commands'), own('CSR'), own('csr/'), own('telemetry/x'), own(''), `devices/${op.id}/telemetry`, `devices/${op.id}/csr`, `devices/${hub.id}/hub/claim`, `devices/${op2.id}`, 'devices', '$SYS/x', '$provisiond/control/disconnect', `devices//${op2.id}/csr`, `/devices/${op2.id}/csr`, `${own('config/ack')}/x`),
      fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/).map((id) => `devices/${id}/csr`),
      fc.string({ minLength: 1, maxLength: 80 }).filter((s) => !/[+#\u0000]/.test(s) && s !== own('csr') && s !== own('config/ack') && s !== own('telemetry')),
      fc.integer({ min: 9, max: 40 }).map((n) => `devices/${op2.id}/${Array.from({ length: n }, () => 'x').join('/')}`),
      fc.constant(`devices/${op2.id}/${'x'.repeat(5000)}`),
    );
    const runs = Math.max(10, Math.ceil(FUZZ_RUNS / 20));
    await watch.reset();
    await fc.assert(
      fc.asyncProperty(topics, fc.constantFrom('{}', '{"requestId":"x","csr":"y"}', ''), async (topic, payload) => {
        const writes = watch.writes;
        const conn = await operational(op2, ['errors', 'state']);
        const closed = new Promise<void>((resolve) => conn.client.once('close', () => resolve()));
        conn.client.publish(topic, payload, { qos: 1 });
        const gone = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
        conn.client.end(true);
        if (!gone) throw new Error(`publishing to ${brief(topic)} did not close the connection`);
        expect(conn.inbox, `answers to a forbidden publish on ${topic}`).toEqual([]);
        if (watch.writes !== writes) await watch.expectUnchanged(() => `publish to ${topic}`);
      }),
      fuzzParams(runs),
    );
    await watch.expectUnchanged(() => 'forbidden topics');
    // the device still works
    const conn = await operational(op2, ['state', 'errors']);
    const ack = { version: (await currentConfig(op2.id)).version, items: [{ id: 'network', status: 'applied' }, { id: 'security', status: 'applied' }] };
    await conn.client.publishAsync(own('config/ack'), JSON.stringify(ack), { qos: 1 });
    const state = await waitFor(() => conn.inbox.shift(), 5000);
    expect(JSON.parse(state!.payload.toString())).toMatchObject({ state: 'provisioned' });
    conn.close();
  }, fuzzTimeout(60, Math.max(10, Math.ceil(FUZZ_RUNS / 20))));

  it('CONNECT with fuzzed bootstrap credentials: a documented CONNACK, nothing changes', async () => {
    const bootstrap = await claimed('fz-connect');
    const token = bootstrap.token;
    const ca = bootstrap.caCertificate;
    const str = (max: number) => fc.string({ maxLength: max, unit: 'grapheme-ascii' });
    const creds = fc.oneof(
      fc.record({ kind: fc.constant('wrong client id'), clientId: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$/).filter((s) => s !== 'fz-connect'), username: fc.constant('fz-connect'), password: fc.constant(token) }),
      fc.record({ kind: fc.constant('wrong username'), clientId: fc.constant('fz-connect'), username: str(40).filter((s) => s !== 'fz-connect'), password: fc.constant(token) }),
      fc.record({
        kind: fc.constant('mangled token'),
        clientId: fc.constant('fz-connect'),
        username: fc.constant('fz-connect'),
        password: fc.oneof(
          fc.nat({ max: token.length - 1 }).map((i) => `${token.slice(0, i)}${token[i] === 'A' ? 'B' : 'A'}${token.slice(i + 1)}`),
          fc.nat({ max: token.length - 1 }).map((i) => token.slice(0, i)),
          str(300),
          fc.constantFrom('', 'not.a.jwt', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJmei1jb25uZWN0In0.', `${token}x`, 'x'.repeat(60_000)),
        ),
      }),
      fc.record({ kind: fc.constant('no credentials'), clientId: fc.constant('fz-connect'), username: fc.constant(undefined), password: fc.constant(undefined) }),
    );
    const runs = Math.max(10, Math.ceil(FUZZ_RUNS / 10));
    const codes: Record<string, number> = {};
    await watch.reset();
    await fc.assert(
      fc.asyncProperty(creds, async (c) => {
        const writes = watch.writes;
        const code = await connectOutcome({ clientId: c.clientId, ca, ...(c.username !== undefined ? { username: c.username } : {}), ...(c.password !== undefined ? { password: c.password } : {}) });
        codes[code] = (codes[code] ?? 0) + 1;
        // §19.5: a CONNECT over twice maxPayloadBytes (a huge password) is cut off unread
        if (code === 'closed') {
          if ((c.password?.length ?? 0) + (c.username?.length ?? 0) <= MAX_PAYLOAD) throw new Error(`${c.kind} ${brief(c)}: closed without a CONNACK`);
          if (watch.writes !== writes) await watch.expectUnchanged(() => `CONNECT ${brief(c)}`);
          return;
        }
        // §19.1: 2 client id, 4 credential, 5 not authorized; never accepted
        if (![2, 4, 5].includes(code) && !(code === 0 && c.password !== undefined && sameToken(c.password, token))) throw new Error(`${c.kind} ${brief(c)}: CONNACK ${code}`);
        // a changed base64url character can leave the decoded token the same (the unused low bits of the last one)
        if (code === 0 && c.password !== undefined && sameToken(c.password, token) && c.username === 'fz-connect' && c.clientId === 'fz-connect') return;
        if (c.kind === 'wrong client id' && code !== 2) throw new Error(`${c.kind}: CONNACK ${code}, expected 2`);
        if (c.kind !== 'wrong client id' && code !== 4) throw new Error(`${c.kind} ${brief(c)}: CONNACK ${code}, expected 4`);
        if (watch.writes !== writes) await watch.expectUnchanged(() => `CONNECT ${brief(c)}`);
      }),
      fuzzParams(runs),
    );
    await watch.expectUnchanged(() => 'fuzzed CONNECTs');
    // the right credential still enrols the device
    const device = new SimDevice({ deviceId: 'fz-connect', model: 'thermostat', bootstrap });
    await device.run();
    await device.stop();
  }, fuzzTimeout(40, Math.max(10, Math.ceil(FUZZ_RUNS / 10))));

  it('bytes that are not MQTT after the TLS handshake: the connection ends, the service stays up', async () => {
    const bytes = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 2000 }).map((b) => Buffer.from(b)),
      // a CONNECT header with a bad protocol name, a truncated packet, a huge remaining length
      fc.constantFrom(
        Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x58, 0x58, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00]),
        Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]),
        Buffer.from([0x10, 0x05, 0x00, 0x04]),
        Buffer.from([0x30, 0x00]),
        Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
      ),
    );
    const runs = Math.max(10, Math.ceil(FUZZ_RUNS / 50));
    await watch.reset();
    await fc.assert(
      fc.asyncProperty(bytes, async (b) => {
        const socket = tlsConnect({ host: '127.0.0.1', port: ts.running.mqttPort, ca: ts.running.ca.rootPem, servername: 'localhost' });
        const ended = new Promise<string>((resolve) => {
          socket.on('close', () => resolve('closed'));
          socket.on('error', () => resolve('error'));
        });
        await new Promise<void>((resolve, reject) => {
          socket.once('secureConnect', () => resolve());
          socket.once('error', reject);
        });
        socket.write(b);
        // garbage is refused at once; a valid-looking prefix waits for the rest until connectTimeout, so hang up soon
        const outcome = await Promise.race([ended, new Promise<string>((r) => setTimeout(() => r('open'), 200))]);
        socket.destroy();
        expect(['closed', 'error', 'open']).toContain(outcome);
      }),
      fuzzParams(runs),
    );
    await watch.expectUnchanged(() => 'bytes that are not MQTT');
    expect((await ts.running.api.inject({ url: '/healthz' })).statusCode).toBe(200);
    const conn = await operational(op2, ['state']);
    conn.close();
  }, fuzzTimeout(300, Math.max(10, Math.ceil(FUZZ_RUNS / 50))));
});

