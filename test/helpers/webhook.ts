/** A real HTTP receiver for webhook tests, on port 0. */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';

export interface Received {
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

export async function webhookReceiver(status = 200): Promise<{ url: string; received: Received[]; waitFor: (n: number, ms?: number) => Promise<Received[]>; close: () => Promise<void> }> {
  const received: Received[] = [];
  const server: Server = createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => (data += c.toString('utf8')));
    req.on('end', () => {
      received.push({ headers: req.headers, body: JSON.parse(data) as Record<string, unknown> });
      res.statusCode = status;
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    received,
    waitFor: async (n, ms = 5000) => {
      const until = Date.now() + ms;
      while (received.length < n) {
        if (Date.now() > until) throw new Error(`expected ${n} webhook deliveries, got ${received.length}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return received;
    },
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections(); // keep-alive sockets from the notifier would hold close() open
      }),
  };
}

/** Reads an SSE stream over real HTTP and collects its events. */
export async function sseClient(url: string, key: string): Promise<{ events: { event: string; data: Record<string, unknown> }[]; waitFor: (pred: (e: { event: string; data: Record<string, unknown> }) => boolean, ms?: number) => Promise<void>; close: () => void }> {
  const controller = new AbortController();
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}` }, signal: controller.signal });
  if (!res.ok || !res.body) throw new Error(`SSE ${res.status}`);
  const events: { event: string; data: Record<string, unknown> }[] = [];
  const reader = res.body.getReader();
  let buf = '';
  void (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += Buffer.from(value).toString('utf8');
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data) events.push({ event, data: JSON.parse(data) as Record<string, unknown> });
        }
      }
    } catch {
      /* aborted */
    }
  })();
  return {
    events,
    waitFor: async (pred, ms = 5000) => {
      const until = Date.now() + ms;
      while (!events.some(pred)) {
        if (Date.now() > until) throw new Error(`no matching SSE event; got ${JSON.stringify(events.map((e) => e.event))}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    close: () => controller.abort(),
  };
}
