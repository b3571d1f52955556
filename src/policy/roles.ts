/** Which API-key role may do what. Pure; the API asks before calling a use-case. */
import type { Role } from '../../schemas/types.js';

export type Operation =
  | 'tenant.create'
  | 'tenant.manage'
  | 'apikey.manage'
  | 'profile.write'
  | 'profile.read'
  | 'device.register'
  | 'device.read'
  | 'device.claim'
  | 'device.release'
  | 'device.reprovision'
  | 'device.admin'
  | 'report.read'
  | 'audit.read'
  | 'metrics.read';

const ALLOWED: Record<Operation, readonly Role[]> = {
  /** Only admins of the service tenant (see SERVICE_TENANT) create tenants. */
  'tenant.create': ['admin'],
  'tenant.manage': ['admin'],
  'apikey.manage': ['admin'],
  'profile.write': ['admin'],
  'profile.read': ['admin', 'factory', 'installer', 'viewer'],
  'device.register': ['admin', 'factory'],
  'device.read': ['admin', 'factory', 'installer', 'hub', 'viewer'],
  'device.claim': ['admin', 'installer', 'hub'],
  /** Installers only within the provisional window (checked by the use-case). */
  'device.release': ['admin', 'installer'],
  'device.reprovision': ['admin', 'installer'],
  /** Revoke, decommission, push config again, ask to renew. */
  'device.admin': ['admin'],
  'report.read': ['admin', 'viewer'],
  /** GET /v1/audit: the caller's tenant; admins of the service tenant may read every tenant's (checked by the use-case). */
  'audit.read': ['admin', 'viewer'],
  /** GET /metrics: service-wide figures, so only keys of the service tenant (checked by the route). */
  'metrics.read': ['admin', 'viewer'],
};

/** The tenant created at first start; its admins may create other tenants. */
export const SERVICE_TENANT = 'default';

export function roleAllows(role: Role, op: Operation): boolean {
  return ALLOWED[op].includes(role);
}

export function operationsTable(): Readonly<Record<Operation, readonly Role[]>> {
  return ALLOWED;
}
