/** Which API-key role may do what. Pure; the API asks before calling a use-case. */
import type { Role } from '../../schemas/types.js';

export type Operation = 'device.register' | 'device.read' | 'device.claim' | 'apikey.create';

const ALLOWED: Record<Operation, readonly Role[]> = {
  'device.register': ['admin', 'factory'],
  'device.read': ['admin', 'factory', 'installer', 'viewer'],
  'device.claim': ['admin', 'installer'],
  'apikey.create': ['admin'],
};

export function roleAllows(role: Role, op: Operation): boolean {
  return ALLOWED[op].includes(role);
}
