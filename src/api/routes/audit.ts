/** GET /v1/audit: the append-only audit log, newest first, filtered and paged. */
import type { FastifyInstance } from 'fastify';
import type { AuditAction, AuditOutcome } from '../../../schemas/types.js';
import type { ApiKeys, AuditLog } from '../../provisioning/index.js';
import { schemaRef } from '../../schemas.js';
import { ctxOf, requireRole } from '../auth.js';
import { errorResponses } from './shared.js';

interface AuditQuerystring {
  tenant?: string;
  device?: string;
  action?: AuditAction;
  outcome?: AuditOutcome;
  since?: string;
  until?: string;
  before?: string;
  limit?: string;
}

/** The query string of GET /v1/audit (also fuzzed by test/fuzz/http-routes.test.ts). */
export const AUDIT_QUERY = {
  type: 'object',
  additionalProperties: false,
  properties: {
    tenant: { $ref: `${schemaRef('common')}#/definitions/TenantId` },
    device: { $ref: `${schemaRef('common')}#/definitions/DeviceId` },
    action: { $ref: `${schemaRef('audit-entry')}#/definitions/AuditAction` },
    outcome: { $ref: `${schemaRef('audit-entry')}#/definitions/AuditOutcome` },
    since: { type: 'string', format: 'date-time' },
    until: { type: 'string', format: 'date-time' },
    before: { type: 'string', pattern: '^[0-9]{1,20}(-[0-9]{1,20})?$' },
    limit: { type: 'string', pattern: '^(?:[1-9][0-9]{0,2}|1000)$' },
  },
};

export function auditRoutes(app: FastifyInstance, { apiKeys, auditLog }: { apiKeys: ApiKeys; auditLog: AuditLog }): void {
  app.get<{ Querystring: AuditQuerystring }>(
    '/v1/audit',
    {
      onRequest: requireRole(apiKeys, 'audit.read'),
      schema: {
        summary: 'Read the audit log',
        tags: ['audit'],
        querystring: AUDIT_QUERY,
        response: {
          200: {
            type: 'object',
            required: ['items'],
            properties: { items: { type: 'array', items: { $ref: schemaRef('audit-entry') } }, next: { type: 'string' } },
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const q = request.query;
      // stored times are toISOString() (milliseconds, Z): compare in that form
      const iso = (t: string | undefined) => (t === undefined ? undefined : new Date(t).toISOString());
      const since = iso(q.since);
      const until = iso(q.until);
      return auditLog.list(ctxOf(request), {
        limit: Number(q.limit ?? 100),
        ...(q.tenant !== undefined ? { tenantId: q.tenant } : {}),
        ...(q.device !== undefined ? { deviceId: q.device } : {}),
        ...(q.action !== undefined ? { action: q.action } : {}),
        ...(q.outcome !== undefined ? { outcome: q.outcome } : {}),
        ...(since !== undefined ? { since } : {}),
        ...(until !== undefined ? { until } : {}),
        ...(q.before !== undefined ? { before: q.before } : {}),
      });
    },
  );
}
