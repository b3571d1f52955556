/** API-key authentication and role check, as a preHandler built per route. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { roleAllows, type Operation } from '../policy/index.js';
import { ProvisioningError, type ApiKeys } from '../provisioning/index.js';
import type { ApiKeyRecord } from '../store/index.js';

declare module 'fastify' {
  interface FastifyRequest {
    apiKey?: ApiKeyRecord;
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
    request.apiKey = key;
  };
}

export function actorOf(request: FastifyRequest): string {
  return request.apiKey ? `apikey:${request.apiKey.id}` : 'anonymous';
}
