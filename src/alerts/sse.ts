/**
 * Server-Sent Events over a Fastify route. The route authorizes and picks the tenant; then
 * `streams.open(tenantId, request, reply)` takes the response over (reply.hijack()), replays what
 * the client missed since its Last-Event-ID, forwards the tenant's new events, and sends a comment
 * heartbeat so proxies keep the connection open.
 *
 * Hijacked responses are invisible to Fastify: `app.close()` waits for every open connection, so
 * an open stream would keep it waiting forever. `attach(app)` adds a preClose hook that ends every
 * stream before the server closes; without it, call closeAll() before app.close().
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { EventBus, ServiceEvent } from './bus.js';
import { AlertsError } from './errors.js';

export interface EventStreamOptions {
  /** Comment heartbeat interval (default 15 000 ms). */
  heartbeatMs?: number;
  /** Sent as the SSE `retry:` field: the client's reconnect delay (default: not sent). */
  retryMs?: number;
  /** Open streams allowed per tenant (default 50); more get 429 TOO_MANY_EVENT_STREAMS. */
  maxStreamsPerTenant?: number;
  /**
   * A client that does not read and lets this many bytes pile up is disconnected (default 1 MiB);
   * it reconnects with Last-Event-ID and gets the rest from the replay buffer.
   */
  maxBufferedBytes?: number;
}

/** Sent (without an id) when a reconnecting client's Last-Event-ID is no longer buffered. */
export const REPLAY_GAP_EVENT = 'stream.gap';

interface OpenStream {
  readonly tenantId: string;
  close(): void;
}

export class EventStreams {
  readonly #bus: EventBus;
  readonly #heartbeatMs: number;
  readonly #retryMs: number | undefined;
  readonly #maxPerTenant: number;
  readonly #maxBuffered: number;
  readonly #open = new Set<OpenStream>();
  #closing = false;

  constructor(bus: EventBus, opts: EventStreamOptions = {}) {
    this.#bus = bus;
    this.#heartbeatMs = opts.heartbeatMs ?? 15_000;
    this.#retryMs = opts.retryMs;
    this.#maxPerTenant = opts.maxStreamsPerTenant ?? 50;
    this.#maxBuffered = opts.maxBufferedBytes ?? 1024 * 1024;
  }

  /** Streams currently open. */
  get size(): number {
    return this.#open.size;
  }

  /** Ends every stream when the app closes (a preClose hook). Call before the app is ready. */
  attach(app: FastifyInstance): void {
    app.addHook('preClose', (done) => {
      this.closeAll();
      done();
    });
  }

  /**
   * Serves the tenant's events on this request. Throws AlertsError (before anything is written,
   * so the app's error handler answers) when shutting down or over the per-tenant limit.
   * `filter`: only the events it accepts are sent (e.g. one device's, for the installer page).
   */
  open(tenantId: string, request: FastifyRequest, reply: FastifyReply, filter?: (e: ServiceEvent) => boolean): void {
    if (this.#closing || this.#bus.closed) throw new AlertsError('EVENT_STREAM_CLOSED');
    let count = 0;
    for (const s of this.#open) if (s.tenantId === tenantId) count++;
    if (count >= this.#maxPerTenant) throw new AlertsError('TOO_MANY_EVENT_STREAMS');

    const header = request.headers['last-event-id'];
    const lastEventId = (Array.isArray(header) ? header[0] : header)?.trim() || undefined;
    const res = reply.raw;
    const log = request.log;

    reply.hijack();
    if (res.destroyed) return; // the client left before we started
    const inherited: Record<string, string | string[] | number> = {};
    for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) inherited[name] = value;
    res.writeHead(200, {
      ...inherited,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
      // The connection ends with the stream. Saying so up front keeps clients from pooling it for
      // reuse (a race with our close) and makes Node close the socket once the response ends, so
      // server.close() never waits on it.
      connection: 'close',
    });

    // HEAD (Fastify's twin of the GET route): the headers a stream would get, then the end. Node
    // sends no body for HEAD and holds the headers back until the first body write, so a stream
    // left open would never be seen by the client at all.
    if (request.method === 'HEAD') {
      res.end();
      return;
    }

    let ended = false;
    /** `bounded`: live writes are checked against maxBufferedBytes; the replay (bounded by the bus buffer) is not, or a large replay could never get through. */
    const write = (chunk: string, bounded = true): void => {
      if (ended) return;
      if (!res.write(chunk) && bounded && res.writableLength > this.#maxBuffered) {
        log.warn({ tenantId, buffered: res.writableLength }, 'event stream client is not reading; disconnecting');
        end(true);
      }
    };
    const end = (force = false): void => {
      if (ended) return;
      ended = true;
      clearInterval(heartbeat);
      unsubscribe();
      this.#open.delete(stream);
      res.off('close', onClose);
      if (force) res.destroy();
      else if (!res.destroyed) res.end();
      log.debug({ tenantId, open: this.#open.size }, 'event stream closed');
    };
    const onClose = (): void => end();
    const stream: OpenStream = { tenantId, close: () => end() };

    // Replay and subscribe in the same tick: publish() is synchronous, so nothing falls between.
    const replay = lastEventId === undefined ? { events: [], gap: false } : this.#bus.since(tenantId, lastEventId);
    const unsubscribe = this.#bus.subscribe(tenantId, (e) => (filter && !filter(e) ? undefined : write(formatEvent(e))), { onClose: () => end() });
    const heartbeat = setInterval(() => write(': ping\n\n'), this.#heartbeatMs);
    this.#open.add(stream);
    res.on('close', onClose);
    res.on('error', (err) => {
      log.debug({ err, tenantId }, 'event stream socket error');
      end(true);
    });

    write(`${this.#retryMs === undefined ? '' : `retry: ${this.#retryMs}\n`}: connected\n\n`, false);
    if (replay.gap) write(`event: ${REPLAY_GAP_EVENT}\ndata: ${JSON.stringify({ lastEventId })}\n\n`, false);
    for (const e of replay.events) if (!filter || filter(e)) write(formatEvent(e), false);
    log.debug({ tenantId, lastEventId, replayed: replay.events.length, gap: replay.gap }, 'event stream opened');
  }

  /** Ends every open stream (server shutdown). New streams are refused from now on. */
  closeAll(): void {
    this.#closing = true;
    for (const s of [...this.#open]) s.close();
  }
}

/** One SSE message. JSON has no raw newlines; id and type are stripped of any to keep framing. */
export function formatEvent(e: ServiceEvent): string {
  const oneLine = (s: string) => s.replace(/[\r\n]/g, '');
  return `id: ${oneLine(e.id)}\nevent: ${oneLine(e.type)}\ndata: ${JSON.stringify(e)}\n\n`;
}
