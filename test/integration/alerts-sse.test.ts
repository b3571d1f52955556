/** Server-Sent Events through a real Fastify app on port 0, read by a real HTTP client. */
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, EventStreams, REPLAY_GAP_EVENT, type EventStreamOptions } from '../../src/alerts/index.js';
import { errorHandler } from '../../src/api/errors.js';
import { ManualClock } from '../helpers/clock.js';

interface Frame {
  id?: string;
  event?: string;
  data?: string;
  comment?: string;
  retry?: string;
}

/** A minimal SSE reader over node:http: collects frames, lets tests wait on conditions. */
class SseClient {
  readonly frames: Frame[] = [];
  status = 0;
  headers: IncomingMessage['headers'] = {};
  body = '';
  ended = false;
  #buffer = '';
  #req: ClientRequest | undefined;
  #res: IncomingMessage | undefined;
  #changed: (() => void)[] = [];

  static async connect(base: string, path: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const c = new SseClient();
    await new Promise<void>((resolve, reject) => {
      c.#req = httpRequest(`${base}${path}`, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
        c.#res = res;
        c.status = res.statusCode ?? 0;
        c.headers = res.headers;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => c.#push(chunk));
        res.on('end', () => c.#finish());
        res.on('close', () => c.#finish());
        resolve();
      });
      c.#req.on('error', (err) => (c.ended ? undefined : reject(err)));
      c.#req.end();
    });
    return c;
  }

  /** Resolves when `predicate` holds; fails after `ms` with what was received so far. */
  async until(predicate: (c: SseClient) => boolean, ms = 3000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!predicate(this)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`condition not met; frames: ${JSON.stringify(this.frames)}; ended: ${this.ended}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#changed.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  events(type?: string): Frame[] {
    return this.frames.filter((f) => f.event !== undefined && (type === undefined || f.event === type));
  }

  /** Stops reading: the server's writes pile up. */
  pause(): void {
    this.#res?.pause();
  }

  disconnect(): void {
    this.#req?.destroy();
  }

  #push(chunk: string): void {
    this.body += chunk;
    this.#buffer += chunk;
    for (let i = this.#buffer.indexOf('\n\n'); i >= 0; i = this.#buffer.indexOf('\n\n')) {
      const block = this.#buffer.slice(0, i);
      this.#buffer = this.#buffer.slice(i + 2);
      const frame: Frame = {};
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) frame.comment = line.slice(1).trim();
        else {
          const at = line.indexOf(':');
          const field = line.slice(0, at) as keyof Frame;
          frame[field] = line.slice(at + 1).replace(/^ /, '');
        }
      }
      this.frames.push(frame);
    }
    this.#notify();
  }

  #finish(): void {
    this.ended = true;
    this.#notify();
  }

  #notify(): void {
    for (const f of this.#changed.splice(0)) f();
  }
}

/** Waits for a server-side condition by polling on the event loop (no fixed sleeps). */
async function until(predicate: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let app: FastifyInstance | undefined;
const clients: SseClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.disconnect();
  await app?.close();
  app = undefined;
});

async function start(opts: EventStreamOptions = {}) {
  const bus = new EventBus({ clock: new ManualClock() });
  const streams = new EventStreams(bus, opts);
  app = Fastify({ logger: false });
  app.setErrorHandler(errorHandler);
  // In the service the tenant comes from the API key; here from the path.
  app.get<{ Params: { tenant: string } }>('/v1/events/:tenant', (request, reply) => {
    reply.header('x-request-id', request.id);
    streams.open(request.params.tenant, request, reply);
  });
  streams.attach(app);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const connect = async (tenant: string, headers: Record<string, string> = {}) => {
    const c = await SseClient.connect(base, `/v1/events/${tenant}`, headers);
    clients.push(c);
    return c;
  };
  return { bus, streams, app, base, connect };
}

const connected = (c: SseClient) => c.frames.some((f) => f.comment === 'connected');

describe('EventStreams (SSE)', () => {
  it('streams its own tenant’s events, as id/event/data frames', async () => {
    const { bus, connect } = await start({ retryMs: 2500 });
    const a = await connect('acme');
    expect(a.status).toBe(200);
    expect(a.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(a.headers['cache-control']).toContain('no-cache');
    expect(a.headers['x-request-id']).toBeDefined(); // headers set before open() are kept
    await a.until(connected);
    expect(a.frames[0]?.retry).toBe('2500');

    bus.publish({ tenantId: 'globex', type: 'device.stalled', deviceId: 'theirs', data: {} });
    const mine = bus.publish({ tenantId: 'acme', type: 'device.provisioned', deviceId: 'mine', data: { profile: 'p1' } });
    await a.until((c) => c.events().length >= 1);
    // the other tenant's event was published first: had it been sent, it would be here already
    expect(a.events()).toEqual([{ id: mine.id, event: 'device.provisioned', data: JSON.stringify(mine) }]);
    expect(JSON.parse(a.events()[0]!.data!)).toMatchObject({ tenantId: 'acme', deviceId: 'mine', data: { profile: 'p1' } });
  });

  it('HEAD over a real socket answers the stream\'s headers and ends, opening no stream', async () => {
    const { base, streams, bus } = await start();
    const res = await fetch(`${base}/v1/events/acme`, { method: 'HEAD', signal: AbortSignal.timeout(5000) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(streams.size).toBe(0);
    expect(bus.listenerCount).toBe(0);
  });

  it('replays what followed Last-Event-ID, then continues live', async () => {
    const { bus, connect } = await start();
    const [e1, e2, e3] = ['one', 'two', 'three'].map((type) => bus.publish({ tenantId: 'acme', type }));
    const c = await connect('acme', { 'last-event-id': e1!.id });
    await c.until((x) => x.events().length >= 2);
    const e4 = bus.publish({ tenantId: 'acme', type: 'four' });
    await c.until((x) => x.events().length >= 3);
    expect(c.events().map((f) => f.id)).toEqual([e2!.id, e3!.id, e4.id]);
    expect(c.events(REPLAY_GAP_EVENT)).toEqual([]);

    // no Last-Event-ID: live events only
    const fresh = await connect('acme');
    await fresh.until(connected);
    const e5 = bus.publish({ tenantId: 'acme', type: 'five' });
    await fresh.until((x) => x.events().length >= 1);
    expect(fresh.events().map((f) => f.id)).toEqual([e5.id]);
  });

  it('an unknown Last-Event-ID gets a gap notice and everything still buffered', async () => {
    const { bus, connect } = await start();
    const e1 = bus.publish({ tenantId: 'acme', type: 'one' });
    const c = await connect('acme', { 'last-event-id': '1-999999' });
    await c.until((x) => x.events().length >= 2);
    expect(c.events()[0]).toMatchObject({ event: REPLAY_GAP_EVENT, data: JSON.stringify({ lastEventId: '1-999999' }) });
    expect(c.events()[0]!.id).toBeUndefined(); // does not move the client's Last-Event-ID
    expect(c.events()[1]!.id).toBe(e1.id);
  });

  it('sends comment heartbeats at the configured interval', async () => {
    const { connect } = await start({ heartbeatMs: 20 });
    const c = await connect('acme');
    await c.until((x) => x.frames.filter((f) => f.comment === 'ping').length >= 2);
  });

  it('a client that disconnects is unsubscribed and its heartbeat stopped', async () => {
    const { bus, streams, connect } = await start({ heartbeatMs: 10 });
    const a = await connect('acme');
    const b = await connect('acme');
    await a.until(connected);
    await b.until(connected);
    expect(streams.size).toBe(2);
    expect(bus.listenerCount).toBe(2);
    a.disconnect();
    await until(() => streams.size === 1 && bus.listenerCount === 1);
    b.disconnect();
    await until(() => streams.size === 0 && bus.listenerCount === 0);
    bus.publish({ tenantId: 'acme', type: 'after' }); // nobody to write to; nothing throws
  });

  it('app.close() ends open streams promptly and leaves nothing behind', async () => {
    const { bus, streams, app: server, connect } = await start();
    const a = await connect('acme');
    const b = await connect('globex');
    await a.until(connected);
    await b.until(connected);
    let timer: NodeJS.Timeout | undefined;
    const tooSlow = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('app.close() is still waiting after 2 s')), 2000);
    });
    await Promise.race([server.close(), tooSlow]).finally(() => clearTimeout(timer));
    app = undefined;
    await a.until((c) => c.ended);
    await b.until((c) => c.ended);
    expect(streams.size).toBe(0);
    expect(bus.listenerCount).toBe(0);
  });

  it('bus.close() ends the streams; new ones get 503 EVENT_STREAM_CLOSED', async () => {
    const { bus, streams, connect } = await start();
    const a = await connect('acme');
    await a.until(connected);
    bus.close();
    await a.until((c) => c.ended);
    expect(streams.size).toBe(0);
    const refused = await connect('acme');
    await refused.until((c) => c.ended);
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.body)).toMatchObject({ code: 'EVENT_STREAM_CLOSED', statusCode: 503 });
  });

  it('limits open streams per tenant with 429 TOO_MANY_EVENT_STREAMS', async () => {
    const { connect } = await start({ maxStreamsPerTenant: 1 });
    const first = await connect('acme');
    await first.until(connected);
    const second = await connect('acme');
    await second.until((c) => c.ended);
    expect(second.status).toBe(429);
    expect(JSON.parse(second.body)).toMatchObject({ code: 'TOO_MANY_EVENT_STREAMS' });
    const otherTenant = await connect('globex');
    expect(otherTenant.status).toBe(200);
  });

  it('disconnects a client that stops reading once too much is buffered; a reading one stays', async () => {
    const { bus, streams, connect } = await start({ maxBufferedBytes: 64 * 1024 });
    const stuck = await connect('acme');
    const reader = await connect('acme');
    await stuck.until(connected);
    await reader.until(connected);
    stuck.pause();
    const big = 'x'.repeat(16 * 1024);
    const deadline = Date.now() + 5000;
    let published = 0;
    // 32 KiB per event-loop turn (under the limit): only a client that does not read falls behind
    while (streams.size > 1 && Date.now() < deadline) {
      for (let i = 0; i < 2; i++, published++) bus.publish({ tenantId: 'acme', type: 'bulk', data: { big } });
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(streams.size).toBe(1);
    expect(bus.listenerCount).toBe(1);
    await reader.until((x) => x.events('bulk').length === published, 5000);
    expect(reader.ended).toBe(false);
  });

  it('a large replay is not cut off by the live-write limit', async () => {
    const { bus, connect } = await start({ maxBufferedBytes: 1024 });
    const first = bus.publish({ tenantId: 'acme', type: 'first' });
    for (let i = 0; i < 20; i++) bus.publish({ tenantId: 'acme', type: 'bulk', data: { big: 'y'.repeat(1024) } });
    const c = await connect('acme', { 'last-event-id': first.id });
    await c.until((x) => x.events().length >= 20);
    expect(c.ended).toBe(false);
  });
});
