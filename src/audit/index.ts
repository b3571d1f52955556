/** The audit domain's public surface: the append-only record of every identity action. */
export { AuditTrail, errorCodeOf, type AuditAction, type AuditEntry, type AuditInput, type AuditLogger } from './trail.js';
