/**
 * The installer app and the device of one unit, following docs/protocol.md only, against a service
 * that may die (SIGKILL), stop (SIGTERM) or refuse at any moment and come back on the same ports.
 * Every step retries as the protocol says:
 *  - claim (installer, HTTP): an answer that never came (connection reset or refused, timeout, 503)
 *    may still have been recorded, so DEVICE_ALREADY_CLAIMED after such an answer means "my claim
 *    went through": ask for a new bootstrap credential (POST /v1/devices/<id>/bootstrap, §3, §15);
 *  - certificate (device, bootstrap session): one key, made once, the same CSR re-sent with the
 *    same token until an answer arrives; a lost answer brings the same certificate again (§15);
 *  - configuration (device, operational session): reconnect, re-subscribe, acknowledge again (the
 *    same document may come again, acknowledgements are idempotent); when a session fails, ask the
 *    device record first: the last answer may be what was lost (§15, "No configuration ...").
 * Back-off: exponential with ±20 % jitter, from `backoffBaseMs`, capped at `backoffCapMs` (the
 * protocol caps at 60 s; tests shorten it).
 */
import type { ClaimResponse, Device, MqttCsrAccepted } from '../../schemas/types.js';
import { SimDevice, makeKeyAndCsr } from '../../firmware-sim/index.js';
import { backoffMs, bootstrapCsrOnce, sleep, type Bootstrap } from './bootstrap.js';
import { NETWORK } from './device.js';

/** Codes after which docs/protocol.md §15 and §19 say: retry with back-off. */
export const RETRYABLE_CODES = ['STORE_UNAVAILABLE', 'ISSUANCE_CONFLICT', 'INTERNAL_ERROR', 'SERVICE_STOPPING'];

export interface Unit {
  id: string;
  claimCode: string;
}

export interface UnitTrace {
  id: string;
  /** What happened, in order (failure messages). */
  steps: string[];
  /** Answers that never came (connection lost or refused, timeout) or said "try later", per stage. */
  lost: { claim: number; csr: number; session: number };
  /** When an answer was last lost at each stage (Date.now()). */
  lastLostAt: { claim?: number; csr?: number; session?: number };
  /** New bootstrap credentials asked for after a claim whose answer was lost. */
  reissued: number;
  /** The certificate the device holds (and its key), once it has one. */
  held?: { keyPem: string; certificate: MqttCsrAccepted };
  provisioned: boolean;
}

export interface DriverOptions {
  /** Base URL of the HTTP API (follows the service when it moves: called before each request). */
  httpUrl: () => string;
  installerKey: string;
  viewerKey: string;
  /** Time for each answer. */
  timeoutMs?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** Attempts per stage before giving up. */
  maxAttempts?: number;
  /** A bootstrap object the installer has already (the claim is skipped). */
  bootstrap?: Bootstrap;
}

type HttpTry<T> = { kind: 'answer'; status: number; body: T & { code?: string }; retryAfter: number | undefined } | { kind: 'lost'; reason: string };

async function http<T>(method: string, url: string, key: string, body: unknown, timeoutMs: number): Promise<HttpTry<T>> {
  try {
    const res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = {};
    }
    const ra = res.headers.get('retry-after');
    return { kind: 'answer', status: res.status, body: parsed as T & { code?: string }, retryAfter: ra === null ? undefined : Number(ra) };
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return { kind: 'lost', reason: cause?.code ?? cause?.message ?? (err as Error).message };
  }
}

export function newTrace(id: string): UnitTrace {
  return { id, steps: [], lost: { claim: 0, csr: 0, session: 0 }, lastLostAt: {}, reissued: 0, provisioned: false };
}

/** Drives one unit to "provisioned" (or to `opts.until`); throws when a step fails for good. */
export async function provisionResilient(unit: Unit, trace: UnitTrace, opts: DriverOptions): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const base = opts.backoffBaseMs ?? 250;
  const cap = opts.backoffCapMs ?? 2000;
  const max = opts.maxAttempts ?? 60;
  const step = (s: string) => trace.steps.push(`${new Date().toISOString().slice(11, 23)} ${s}`);
  const fail = (what: string) => new Error(`${unit.id}: ${what}; steps: ${trace.steps.join('; ')}`);
  const state: { bootstrap?: Bootstrap; key?: { keyPem: string; csrPem: string } } = { ...(opts.bootstrap ? { bootstrap: opts.bootstrap } : {}) };

  // 1. claim (installer app)
  let uncertain = false;
  for (let t = 0; !state.bootstrap; t++) {
    if (t >= max) throw fail(`no claim after ${t} attempts`);
    const res = await http<ClaimResponse>('POST', `${opts.httpUrl()}/v1/claims`, opts.installerKey, { claimCode: unit.claimCode, owner: 'alice', site: 'home', network: NETWORK }, timeoutMs);
    if (res.kind === 'answer' && res.status === 201) {
      state.bootstrap = res.body.bootstrap!;
      step('claimed');
    } else if (res.kind === 'lost' || res.status === 503) {
      uncertain = true;
      trace.lost.claim++;
      trace.lastLostAt.claim = Date.now();
      step(`claim: ${res.kind === 'lost' ? `lost (${res.reason})` : `503 ${res.body.code ?? ''}`}`);
      await sleep(res.kind === 'answer' && res.retryAfter ? res.retryAfter * 1000 : backoffMs(t, base, cap));
    } else if (res.status === 409 && res.body.code === 'DEVICE_ALREADY_CLAIMED' && uncertain) {
      // the claim whose answer was lost was recorded: its token is unknown to us, get a new one
      step('claim: 409 after a lost answer, asking for a new bootstrap credential');
      for (let r = 0; !state.bootstrap; r++) {
        if (r >= max) throw fail('no new bootstrap credential');
        const re = await http<ClaimResponse>('POST', `${opts.httpUrl()}/v1/devices/${unit.id}/bootstrap`, opts.installerKey, undefined, timeoutMs);
        if (re.kind === 'answer' && re.status === 201) {
          state.bootstrap = re.body.bootstrap!;
          trace.reissued++;
          step('new bootstrap credential');
        } else if (re.kind === 'lost' || re.status === 503) {
          trace.lost.claim++;
          trace.lastLostAt.claim = Date.now();
          step(`new bootstrap credential: ${re.kind === 'lost' ? `lost (${re.reason})` : `503 ${re.body.code ?? ''}`}`);
          await sleep(re.kind === 'answer' && re.retryAfter ? re.retryAfter * 1000 : backoffMs(r, base, cap));
        } else {
          throw fail(`new bootstrap credential: ${re.status} ${JSON.stringify(re.body)}`);
        }
      }
    } else {
      throw fail(`claim: ${res.status} ${JSON.stringify(res.body)}`);
    }
  }
  const bootstrap = state.bootstrap;

  // 2. certificate: one key for every re-send, persisted before the first send (§15)
  state.key ??= await makeKeyAndCsr(unit.id);
  const { keyPem, csrPem } = state.key;
  let refused5 = 0;
  for (let t = 0; !trace.held; t++) {
    if (t >= max) throw fail(`no certificate after ${t} sends`);
    const outcome = await bootstrapCsrOnce(bootstrap.mqttUrl, bootstrap, csrPem, { requestId: `r${t}`, timeoutMs });
    if (outcome.kind === 'accepted') {
      trace.held = { keyPem, certificate: outcome.answer };
      step(`certificate ${outcome.answer.serial}`);
      break;
    }
    const what = outcome.kind === 'rejected' ? outcome.code : outcome.kind === 'refused' ? `CONNACK ${outcome.connack}` : `lost (${outcome.reason})`;
    step(`CSR: ${what}`);
    const retry =
      outcome.kind === 'lost' ||
      (outcome.kind === 'refused' && (outcome.connack === 3 || (outcome.connack === 5 && ++refused5 <= 3))) ||
      (outcome.kind === 'rejected' && RETRYABLE_CODES.includes(outcome.code));
    if (!retry) throw fail(`CSR not retryable: ${what}`);
    trace.lost.csr++;
    trace.lastLostAt.csr = Date.now();
    await sleep(backoffMs(t, base, cap));
  }
  const cert = trace.held.certificate;

  // 3. configuration, acknowledgement, provisioned
  for (let t = 0; ; t++) {
    if (t >= max) throw fail(`not provisioned after ${t} sessions`);
    const sim = new SimDevice({
      deviceId: unit.id,
      model: 'thermostat',
      broker: { mqttUrl: bootstrap.mqttUrl, caCertificate: bootstrap.caCertificate },
      identity: { keyPem, certPem: cert.certificate, chainPems: cert.chain },
      timeoutMs,
    });
    try {
      await sim.run();
      trace.provisioned = true;
      step('provisioned');
      return;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      step(`session: ${String(code ?? '')} ${(err as Error).message}`);
      trace.lost.session++;
      trace.lastLostAt.session = Date.now();
    } finally {
      await sim.stop().catch(() => undefined);
    }
    // The answer to the last acknowledgement may be what was lost: the record knows (the
    // installer app asks it). Without this a new session would wait for a configuration that is
    // not sent any more, since every required item is applied (§15, "No configuration ...").
    for (let r = 0; ; r++) {
      if (r >= max) throw fail('the device record cannot be read');
      await sleep(backoffMs(r, base, cap));
      const seen = await http<Device>('GET', `${opts.httpUrl()}/v1/devices/${unit.id}`, opts.viewerKey, undefined, timeoutMs);
      if (seen.kind === 'answer' && seen.status === 200) {
        if (seen.body.state !== 'provisioned') break;
        trace.provisioned = true;
        step('the record says provisioned');
        return;
      }
      step(`device record: ${seen.kind === 'lost' ? `lost (${seen.reason})` : seen.status}`);
    }
  }
}

/** Runs `work` over `items` with at most `concurrency` at once; resolves when all are done. */
export async function pool<T>(items: readonly T[], concurrency: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const errors: unknown[] = [];
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await work(items[i]!, i).catch((err: unknown) => errors.push(err));
      }
    }),
  );
  if (errors.length > 0) throw new AggregateError(errors, `${errors.length} of ${items.length} failed; first: ${(errors[0] as Error).message}`);
}
