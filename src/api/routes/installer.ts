/**
 * The installer's phone page (GET /install, plain HTML + vanilla JS from src/web/installer/) and the
 * one API route it needs beyond the public ones: a device-scoped event stream.
 *
 * The page keeps the installer API key in sessionStorage of its tab only and sends it as
 * `Authorization: Bearer` on every call; it is never put in a URL. For that reason the page reads
 * the stream below with fetch() (which can send the header) instead of EventSource (which cannot).
 * The page is served with a strict Content-Security-Policy (no inline script, same-origin only).
 */
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { ctxOf, requireRole } from '../auth.js';
import { errorResponses, idParams, type RouteDeps } from './shared.js';

/** The page's files: beside the sources (tsx, tests) or, from dist/, back in the source tree. */
function webDir(): string {
  const candidates = ['../../web/installer/', '../../../../src/web/installer/'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
  return candidates.find((dir) => existsSync(`${dir}index.html`)) ?? candidates[0]!;
}

const FILES: Record<string, { file: string; type: string }> = {
  '/install': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/install/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/install/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "manifest-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function installerRoutes(app: FastifyInstance, { apiKeys, service, streams }: RouteDeps): void {
  const dir = webDir();
  const cache = new Map<string, Buffer>();
  const serve = async (path: string, reply: FastifyReply) => {
    const entry = FILES[path]!;
    let body = cache.get(entry.file);
    if (!body) {
      body = await readFile(`${dir}${entry.file}`);
      cache.set(entry.file, body);
    }
    return reply
      .type(entry.type)
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-cache')
      .send(body);
  };
  for (const path of Object.keys(FILES)) app.get(path, { schema: { hide: true } }, async (_request, reply) => serve(path, reply));
  app.get('/install/', { schema: { hide: true } }, async (_request, reply) => reply.redirect('/install'));

  // One device's events (SSE), for whoever may read the device: the installer page's live progress.
  app.get<{ Params: { id: string } }>(
    '/v1/devices/:id/events',
    {
      onRequest: requireRole(apiKeys, 'device.read'),
      schema: {
        summary: "One device's events (server-sent events), e.g. for the installer page",
        tags: ['events'],
        params: idParams,
        response: { 200: { description: "This device's events, as GET /v1/events sends them", content: { 'text/event-stream': { schema: { type: 'string' } } } }, ...errorResponses },
      },
    },
    async (request, reply) => {
      const ctx = ctxOf(request);
      await service.getDevice(ctx, request.params.id); // 404 DEVICE_NOT_FOUND outside the tenant
      const id = request.params.id;
      streams.open(ctx.tenantId, request, reply, (e) => e.deviceId === id);
      return reply;
    },
  );
}
