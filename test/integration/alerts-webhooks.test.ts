/** WebhookNotifier against real local HTTP servers (no fetch mocks). */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AlertsError, EventBus, WebhookNotifier, forwardToWebhooks, type ServiceEvent, type WebhookNotifierOptions } from '../../src/alerts/index.js';
import { systemClock } from '../../src/clock.js';

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  url: string;
}

/** A real receiver; `answer` decides each response (n = 1-based request count). */
class Receiver {
  readonly received: Received[] = [];
  inFlight = 0;
  maxInFlight = 0;
  readonly server: Server;
  #waiters: (() => void)[] = [];
  constructor(answer: (req: Received, res: ServerResponse, n: number) => void) {
    this.server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), url: req.url ?? '' };
        this.received.push(r);
        this.inFlight++;
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
        res.on('close', () => this.inFlight--);
        for (const w of this.#waiters.splice(0)) w();
        answer(r, res, this.received.length);
      });
    });
  }
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks/provisiond?token=t0ps3cret`;
  }
  /** Resolves once `n` requests have arrived. */
  async waitForRequests(n: number): Promise<void> {
    while (this.received.length < n) await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const receivers: Receiver[] = [];
const notifiers: WebhookNotifier[] = [];
afterEach(async () => {
  await Promise.all(notifiers.splice(0).map((n) => n.stop()));
  await Promise.all(receivers.splice(0).map((r) => r.stop()));
});

async function receiver(answer: (req: Received, res: ServerResponse, n: number) => void) {
  const r = new Receiver(answer);
  receivers.push(r);
  return { r, url: await r.start() };
}

const status = (code: number) => (_req: Received, res: ServerResponse) => res.writeHead(code).end();

function notifier(opts: Partial<WebhookNotifierOptions> = {}) {
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const delays: number[] = [];
  const n = new WebhookNotifier({
    clock: systemClock,
    log,
    sleep: async (ms) => void delays.push(ms),
    ...opts,
  });
  notifiers.push(n);
  return { n, logs, delays };
}

let seq = 0;
const event = (type = 'device.stalled', data: Record<string, unknown> = {}): ServiceEvent => ({
  id: `1900000000000-${++seq}`,
  tenantId: 'acme',
  type,
  at: '2030-01-01T00:00:00.000Z',
  deviceId: 'dev-1',
  data,
});

describe('WebhookNotifier', () => {
  it('delivers the event as signed JSON on the first attempt', async () => {
    const { r, url } = await receiver(status(204));
    const { n, logs } = notifier();
    const e = event('device.provisioned', { note: 'héllo ✓' });
    n.notify({ url, secret: 's3cret-key' }, e);
    await n.drain();

    expect(r.received).toHaveLength(1);
    const [got] = r.received;
    expect(JSON.parse(got!.body)).toEqual(e);
    expect(got!.url).toBe('/hooks/provisiond?token=t0ps3cret');
    expect(got!.headers['content-type']).toBe('application/json');
    expect(got!.headers['x-provisiond-event']).toBe('device.provisioned');
    expect(got!.headers['x-provisiond-delivery']).toBe(e.id);
    const expected = createHmac('sha256', 's3cret-key').update(Buffer.from(got!.body, 'utf8')).digest('hex');
    expect(got!.headers['x-provisiond-signature']).toBe(`sha256=${expected}`);
    expect(n.deliveries).toEqual({ attempted: 1, succeeded: 1, failed: 0, dropped: 0, pending: 0 });

    // the log names the host only: never the secret, the path or the query
    const text = JSON.stringify(logs);
    expect(logs.some((l) => l.msg === 'webhook delivered' && l.host === new URL(url).host && l.status === 204)).toBe(true);
    expect(text).not.toContain('s3cret-key');
    expect(text).not.toContain('t0ps3cret');
    expect(text).not.toContain('/hooks');
  });

  it('sends no signature header without a secret', async () => {
    const { r, url } = await receiver(status(200));
    const { n } = notifier();
    n.notify({ url }, event());
    await n.drain();
    expect(r.received[0]!.headers['x-provisiond-signature']).toBeUndefined();
  });

  it('500, 500, 200: delivered on attempt 3 after growing, jittered delays', async () => {
    const { r, url } = await receiver((_req, res, i) => res.writeHead(i <= 2 ? 500 : 200).end());
    const { n, delays, logs } = notifier({ baseDelayMs: 1000 });
    n.notify({ url }, event());
    await n.drain();
    expect(r.received).toHaveLength(3);
    expect(new Set(r.received.map((x) => x.headers['x-provisiond-delivery'])).size).toBe(1);
    expect(delays).toHaveLength(2);
    expect(delays[0]).toBeGreaterThanOrEqual(800);
    expect(delays[0]).toBeLessThanOrEqual(1200);
    expect(delays[1]).toBeGreaterThanOrEqual(1600);
    expect(delays[1]).toBeLessThanOrEqual(2400);
    expect(n.deliveries).toEqual({ attempted: 3, succeeded: 1, failed: 0, dropped: 0, pending: 0 });
    expect(logs.filter((l) => l.msg === 'webhook delivery failed; will retry').map((l) => [l.attempt, l.status])).toEqual([
      [1, 500],
      [2, 500],
    ]);
  });

  it('backoff doubles from baseDelayMs, jitter stays within ±20 %, and caps at 5 minutes', async () => {
    const { url } = await receiver(status(503));
    const low = notifier({ baseDelayMs: 100_000, maxAttempts: 4, random: () => 0 });
    low.n.notify({ url }, event());
    await low.n.drain();
    expect(low.delays).toEqual([80_000, 160_000, 300_000]);
    const high = notifier({ baseDelayMs: 1000, maxAttempts: 3, random: () => 0.999999 });
    high.n.notify({ url }, event());
    await high.n.drain();
    expect(high.delays).toEqual([1200, 2400]);
  });

  it('honours Retry-After on 429 (still retried) within the cap', async () => {
    const { r, url } = await receiver((_req, res, i) => (i === 1 ? res.writeHead(429, { 'retry-after': '7' }).end() : res.writeHead(200).end()));
    const { n, delays } = notifier({ baseDelayMs: 1000 });
    n.notify({ url }, event());
    await n.drain();
    expect(r.received).toHaveLength(2);
    expect(delays).toEqual([7000]);
  });

  it('a receiver that never answers times out each attempt and is given up after maxAttempts', async () => {
    const { r, url } = await receiver(() => undefined); // holds every request open
    const { n, logs } = notifier({ timeoutMs: 100, maxAttempts: 3 });
    n.notify({ url }, event());
    await n.drain();
    expect(r.received).toHaveLength(3);
    expect(n.deliveries).toEqual({ attempted: 3, succeeded: 0, failed: 1, dropped: 0, pending: 0 });
    expect(logs.filter((l) => typeof l.attempt === 'number').map((l) => l.error)).toEqual(['timeout', 'timeout', 'timeout']);
    expect(logs.at(-1)?.msg).toBe('webhook delivery failed; giving up after 3 attempts');
  });

  it('400 is permanent: one attempt, no retry; 408 is retried', async () => {
    const { r, url } = await receiver(status(400));
    const { n, delays, logs } = notifier();
    n.notify({ url }, event());
    await n.drain();
    expect(r.received).toHaveLength(1);
    expect(delays).toEqual([]);
    expect(n.deliveries).toMatchObject({ attempted: 1, succeeded: 0, failed: 1 });
    expect(logs.at(-1)).toMatchObject({ msg: 'webhook delivery rejected; not retrying', status: 400 });

    const timeout = await receiver(status(408));
    const second = notifier({ maxAttempts: 2 });
    second.n.notify({ url: timeout.url }, event());
    await second.n.drain();
    expect(timeout.r.received).toHaveLength(2);
  });

  it('connection refused is retried', async () => {
    const closed = new Receiver(status(200));
    const url = await closed.start();
    await closed.stop();
    const { n, delays, logs } = notifier({ maxAttempts: 4 });
    n.notify({ url }, event());
    await n.drain();
    expect(n.deliveries).toEqual({ attempted: 4, succeeded: 0, failed: 1, dropped: 0, pending: 0 });
    expect(delays).toHaveLength(3);
    expect(logs.filter((l) => typeof l.attempt === 'number').every((l) => l.error === 'ECONNREFUSED')).toBe(true);
  });

  it('one target: one delivery at a time, in notify order, even across retries', async () => {
    let failedOnce = false;
    const { r, url } = await receiver((req, res) => {
      const { data } = JSON.parse(req.body) as ServiceEvent;
      // the second event fails once; the third must not overtake it
      if (data.n === 2 && !failedOnce) {
        failedOnce = true;
        return void setImmediate(() => res.writeHead(502).end());
      }
      setImmediate(() => res.writeHead(200).end());
    });
    const { n } = notifier();
    for (let i = 1; i <= 6; i++) n.notify({ url }, event('device.stalled', { n: i }));
    expect(n.deliveries.pending).toBe(6);
    await n.drain();
    expect(r.received.map((x) => (JSON.parse(x.body) as ServiceEvent).data.n)).toEqual([1, 2, 2, 3, 4, 5, 6]);
    expect(r.maxInFlight).toBe(1);
    expect(n.deliveries).toEqual({ attempted: 7, succeeded: 6, failed: 0, dropped: 0, pending: 0 });
  });

  it('different targets are delivered concurrently (a slow one does not block another)', async () => {
    let release: (() => void) | undefined;
    const slow = await receiver((_req, res) => {
      release = () => res.writeHead(200).end();
    });
    const fast = await receiver(status(200));
    const { n } = notifier();
    n.notify({ url: slow.url }, event());
    n.notify({ url: fast.url }, event());
    await slow.r.waitForRequests(1);
    await fast.r.waitForRequests(1);
    release!();
    await n.drain();
    expect(n.deliveries).toMatchObject({ succeeded: 2, pending: 0 });
  });

  it('stop() cancels a pending retry and a real (default) backoff timer without waiting for it', async () => {
    const { r, url } = await receiver(status(500));
    // no injected sleep: the real timer is used, and stop() must not wait the minute out
    const logs: string[] = [];
    const real = new WebhookNotifier({ clock: systemClock, log: pino({}, { write: (l: string) => void logs.push(l) }), baseDelayMs: 60_000 });
    notifiers.push(real);
    real.notify({ url }, event());
    real.notify({ url }, event()); // queued behind the first
    await vi.waitFor(() => expect(logs.join('')).toContain('will retry')); // the 500 arrived; now in backoff
    const started = Date.now();
    await real.stop();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(real.deliveries).toEqual({ attempted: 1, succeeded: 0, failed: 0, dropped: 2, pending: 0 });
    real.notify({ url }, event());
    expect(real.deliveries.dropped).toBe(3);
    expect(r.received).toHaveLength(1);
  });

  it('stop() aborts an in-flight request', async () => {
    const { r, url } = await receiver(() => undefined);
    const { n } = notifier({ timeoutMs: 60_000 });
    n.notify({ url }, event());
    await r.waitForRequests(1);
    await n.stop();
    expect(n.deliveries).toEqual({ attempted: 1, succeeded: 0, failed: 0, dropped: 1, pending: 0 });
  });

  it('refuses URLs it can never deliver to', () => {
    const { n } = notifier();
    for (const url of ['not a url', 'ftp://example.com/x', 'https://user:pw@example.com/x']) {
      expect(() => n.notify({ url }, event())).toThrow(AlertsError);
    }
    expect(n.deliveries.pending).toBe(0);
  });

  it('drops deliveries beyond maxQueuedPerTarget', async () => {
    const { r, url } = await receiver(status(200));
    const { n } = notifier({ maxQueuedPerTarget: 2 });
    for (let i = 0; i < 4; i++) n.notify({ url }, event());
    await n.drain();
    expect(r.received).toHaveLength(2);
    expect(n.deliveries).toMatchObject({ succeeded: 2, dropped: 2 });
  });
});

describe('forwardToWebhooks', () => {
  it('forwards each tenant’s events to its webhook, in order, skipping tenants without one', async () => {
    const { r, url } = await receiver(status(200));
    const { n, logs } = notifier();
    const bus = new EventBus({ clock: systemClock });
    // the first lookup is the slowest: order must still hold
    let lookups = 0;
    const off = forwardToWebhooks(bus, n, {
      log: pino({ level: 'silent' }),
      types: ['device.stalled', 'device.provisioned'],
      targetOf: async (tenantId) => {
        const delay = lookups++ === 0 ? 30 : 0;
        await new Promise((resolve) => setTimeout(resolve, delay));
        return tenantId === 'acme' ? { url, secret: 'k' } : undefined;
      },
    });
    bus.publish({ tenantId: 'acme', type: 'device.stalled', data: { n: 1 } });
    bus.publish({ tenantId: 'acme', type: 'device.released', data: { n: 2 } }); // filtered out
    bus.publish({ tenantId: 'other', type: 'device.stalled', data: { n: 3 } }); // no webhook
    bus.publish({ tenantId: 'acme', type: 'device.provisioned', data: { n: 4 } });
    await r.waitForRequests(2);
    await n.drain();
    expect(r.received.map((x) => (JSON.parse(x.body) as ServiceEvent).data.n)).toEqual([1, 4]);
    off();
    expect(bus.listenerCount).toBe(0);
    expect(logs.some((l) => l.msg === 'webhook not queued')).toBe(false);
  });
});
