/** API-key authentication and role check, as a preHandler built per route. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { roleAllows, type Operation } from '../policy/index.js';
import { ProvisioningError, type ApiKeys, type TenantContext } from '../provisioning/index.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by requireRole: the caller's tenant, actor and role. */
    tenant?: TenantContext;
  }
}

export function requireRole(apiKeys: ApiKeys, op: Operation) {
  return async (request: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const header = request.headers.authorization;
    if (!header) throw new ProvisioningError('AUTH_REQUIRED');
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw new ProvisioningError('AUTH_INVALID', 'use "Authorization: Bearer <key>"');
    const key = await apiKeys.verify(m[1]!);
    if (!roleAllows(key.role, op)) throw new ProvisioningError('ROLE_FORBIDDEN', `role ${key.role} may not ${op}`);
    request.tenant = { tenantId: key.tenantId, actor: `apikey:${key.id}`, role: key.role };
  };
}

/** The caller's context; routes only run after requireRole. */
export function ctxOf(request: FastifyRequest): TenantContext {
  if (!request.tenant) throw new ProvisioningError('AUTH_REQUIRED');
  return request.tenant;
}
