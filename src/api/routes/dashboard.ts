/**
 * The operator dashboard (docs/dashboard.md): static page and assets under /dashboard, and its own
 * JSON endpoints under /dashboard/api that authenticate by the session cookie (never by API key),
 * with an X-CSRF-Token header on every state-changing call. Thin: each handler resolves the session
 * and calls a use-case (DashboardData, Lifecycle) in the session's tenant.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { roleAllows, type Operation } from '../../policy/index.js';
import { DashboardError, SESSION_COOKIE, type DashboardData, type DashboardSession, type DashboardSessions } from '../../provisioning/dashboard.js';
import { ProvisioningError } from '../../provisioning/index.js';
import { schemaRef } from '../../schemas.js';
import { requireRole } from '../auth.js';
import { sendError } from '../errors.js';
import { idParams, reasonBody, type RouteDeps } from './shared.js';
import type { ApiKeys } from '../../provisioning/index.js';

export interface DashboardDeps {
  sessions: DashboardSessions;
  data: DashboardData;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the dashboard's session check. */
    dashboardSession?: DashboardSession;
  }
}

const ASSETS: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'dashboard.js': 'text/javascript; charset=utf-8',
  'dashboard.css': 'text/css; charset=utf-8',
};

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

/** src/web/dashboard from src/api/routes (tsx) or dist/src/api/routes (built: the sources sit beside dist). */
function assetDir(): string {
  for (const rel of ['../../web/dashboard/', '../../../../src/web/dashboard/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}index.html`)) return dir;
  }
  return fileURLToPath(new URL('../../web/dashboard/', import.meta.url));
}

export function readCookie(request: FastifyRequest, name: string): string | undefined {
  const header = request.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** The session of the request's cookie, or SESSION_REQUIRED; with `csrf`, the X-CSRF-Token header must match. */
function requireSession(sessions: DashboardSessions, op: Operation, opts: { csrf?: boolean } = {}) {
  return async (request: FastifyRequest): Promise<void> => {
    const session = await sessions.get(readCookie(request, SESSION_COOKIE));
    if (!session) throw new DashboardError('SESSION_REQUIRED');
    if (opts.csrf) {
      const header = request.headers['x-csrf-token'];
      if (!sessions.checkCsrf(session, Array.isArray(header) ? header[0] : header)) throw new DashboardError('CSRF_TOKEN_INVALID');
    }
    if (!roleAllows(session.role, op)) throw new ProvisioningError('ROLE_FORBIDDEN', `role ${session.role} may not ${op}`);
    request.dashboardSession = session;
    request.tenant = sessions.context(session);
  };
}

/**
 * For GET /v1/events: an API key (Authorization header) as before, or else the dashboard session
 * cookie (an EventSource cannot set headers). A GET that only reads, so no CSRF token.
 */
export function requireRoleOrSession(apiKeys: ApiKeys, sessions: DashboardSessions | undefined, op: Operation) {
  const byKey = requireRole(apiKeys, op);
  const bySession = sessions ? requireSession(sessions, op) : undefined;
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (request.headers.authorization || !bySession || !readCookie(request, SESSION_COOKIE)) return byKey(request, reply);
    return bySession(request);
  };
}

function sessionCookie(request: FastifyRequest, value: string, maxAgeSeconds: number): string {
  // Secure only when the page is known to be served over https: this listener's own TLS, or a proxy
  // saying so (a forged header can only make the cookie stricter). See docs/dashboard.md.
  const forwarded = request.headers['x-forwarded-proto'];
  const https = request.protocol === 'https' || (typeof forwarded === 'string' && forwarded.split(',')[0]!.trim() === 'https');
  return `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${https ? '; Secure' : ''}`;
}

const sessionView = (s: DashboardSession) => ({ signedIn: true, tenantId: s.tenantId, role: s.role, keyId: s.keyId, csrfToken: s.csrfToken, expiresAt: s.expiresAt });

const ACTIONS: Record<string, Operation> = { release: 'device.release', 'config-push': 'device.admin', revoke: 'device.admin', decommission: 'device.admin' };

export function dashboardRoutes(app: FastifyInstance, deps: RouteDeps & { dashboard: DashboardDeps }): void {
  const { lifecycle } = deps;
  const { sessions, data } = deps.dashboard;
  const dir = assetDir();
  const cache = new Map<string, Buffer>();

  const sendAsset = async (reply: FastifyReply, name: string) => {
    let body = cache.get(name);
    if (!body) cache.set(name, (body = await readFile(dir + name)));
    return reply.headers(SECURITY_HEADERS).header('cache-control', 'no-cache').type(ASSETS[name]!).send(body);
  };
  app.get('/dashboard', { schema: { hide: true } }, async (_request, reply) => sendAsset(reply, 'index.html'));
  app.get<{ Params: { file: string } }>('/dashboard/assets/:file', { schema: { hide: true } }, async (request, reply) => {
    const name = request.params.file;
    if (!Object.hasOwn(ASSETS, name) || name === 'index.html') return sendError(reply, 404, 'NOT_FOUND', `no dashboard file ${name}`);
    return sendAsset(reply, name);
  });

  // ---------------------------------------------------------------------------- session
  app.post<{ Body: { apiKey: string } }>(
    '/dashboard/api/session',
    { schema: { hide: true, body: { type: 'object', additionalProperties: false, required: ['apiKey'], properties: { apiKey: { type: 'string', minLength: 1, maxLength: 256 } } } } },
    async (request, reply) => {
      const session = await sessions.signIn(request.body.apiKey.trim());
      const maxAge = Math.round((Date.parse(session.expiresAt) - Date.parse(session.createdAt)) / 1000);
      return reply.code(201).header('set-cookie', sessionCookie(request, session.id, maxAge)).header('cache-control', 'no-store').send(sessionView(session));
    },
  );
  // 200 either way, so that the page asks without a failed request in the browser's console
  app.get('/dashboard/api/session', { schema: { hide: true } }, async (request, reply) => {
    const session = await sessions.get(readCookie(request, SESSION_COOKIE));
    return reply.header('cache-control', 'no-store').send(session ? sessionView(session) : { signedIn: false });
  });
  app.delete('/dashboard/api/session', { onRequest: requireSession(sessions, 'report.read', { csrf: true }), schema: { hide: true } }, async (request, reply) => {
    sessions.signOut(request.dashboardSession!.id);
    return reply.header('set-cookie', sessionCookie(request, '', 0)).code(204).send();
  });

  // ---------------------------------------------------------------------------- data
  app.get('/dashboard/api/overview', { onRequest: requireSession(sessions, 'report.read'), schema: { hide: true } }, async (request) => data.overview(request.tenant!));
  app.get<{ Querystring: { after?: string; limit?: string } }>(
    '/dashboard/api/stalled',
    {
      onRequest: requireSession(sessions, 'report.read'),
      schema: {
        hide: true,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { after: { type: 'string', maxLength: 64 }, limit: { type: 'string', pattern: '^(?:[1-9][0-9]?|100)$' } },
        },
      },
    },
    async (request) => data.stalled(request.tenant!, { limit: Number(request.query.limit ?? 25), ...(request.query.after ? { after: request.query.after } : {}) }),
  );
  app.get<{ Params: { id: string } }>(
    '/dashboard/api/devices/:id',
    { onRequest: requireSession(sessions, 'device.read'), schema: { hide: true, params: idParams } },
    async (request) => data.device(request.tenant!, request.params.id),
  );

  // ---------------------------------------------------------------------------- actions
  for (const [action, op] of Object.entries(ACTIONS)) {
    app.post<{ Params: { id: string }; Body: { reason?: string } | undefined }>(
      `/dashboard/api/devices/:id/${action}`,
      {
        onRequest: requireSession(sessions, op, { csrf: true }),
        preValidation: async (request) => {
          if (request.body === undefined || request.body === null) request.body = {};
        },
        schema: { hide: true, params: idParams, body: reasonBody, response: { 200: { $ref: schemaRef('device') } } },
      },
      async (request) => {
        const ctx = request.tenant!;
        const id = request.params.id;
        const reason = request.body?.reason;
        const device =
          action === 'release'
            ? await lifecycle.release(ctx, id, reason)
            : action === 'revoke'
              ? await lifecycle.revoke(ctx, id, reason)
              : action === 'decommission'
                ? await lifecycle.decommission(ctx, id, reason)
                : await lifecycle.pushConfig(ctx, id);
        data.invalidate(ctx.tenantId);
        return device;
      },
    );
  }
}
