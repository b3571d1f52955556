/**
 * The audit trail: builds audit entries (schemas/audit-entry.json) and appends them to the store's
 * append-only log.
 *
 * Where an entry is written:
 * - an action that changes the store (claim, issuance, renewal, revoke, release, re-provision,
 *   decommission, API key creation and revocation) carries its success entry INTO its own store
 *   transaction (DeviceUpdateExtras.audit, IssuanceCommit.audit, insertApiKey/deleteApiKey): the
 *   action and its entry are committed together or not at all, so an action never succeeds
 *   without its record (fail-closed);
 * - a refused or failed action is recorded right after, by record(): nothing else to commit;
 * - keys and secrets created or encrypted on disk at start are recorded right after the file is
 *   written (a file system write cannot share a store transaction).
 * record() never throws: when the store refuses the entry, the failure is logged at error level
 * with the entry (which holds no secret), so an operator sees every entry that is missing.
 */
import { randomBytes } from 'node:crypto';
import type { AuditAction, AuditEntry } from '../../schemas/types.js';
import type { Clock } from '../clock.js';
import type { Store } from '../store/index.js';

/** What a caller says about an entry; id and time are added. */
export type AuditInput = Omit<AuditEntry, 'id' | 'at' | 'outcome'> & { outcome?: AuditEntry['outcome'] };

/** The logger calls the trail makes (a pino logger fits). */
export interface AuditLogger {
  error(obj: object, msg: string): void;
}

/** Details keep small scalar facts only: strings cut at this length. */
const MAX_DETAIL_CHARS = 200;
const FIELD_LIMITS = [
  ['actor', 200],
  ['deviceId', 64],
  ['serial', 64],
  ['target', 256],
] as const satisfies readonly (readonly [keyof AuditEntry, number])[];

export class AuditTrail {
  /** Entries the store refused since start (also logged). */
  failedWrites = 0;

  constructor(
    private readonly store: Pick<Store, 'appendAudit'>,
    private readonly clock: Clock,
    private readonly log: AuditLogger,
  ) {}

  /** A complete entry (success unless said otherwise), for a store transaction or record(). */
  entry(input: AuditInput): AuditEntry {
    const { details, outcome, ...rest } = input;
    const entry: AuditEntry = { id: randomBytes(16).toString('hex'), at: this.clock.now().toISOString(), ...rest, outcome: outcome ?? 'success' };
    // ids a client chose (a device id in a refused request, a topic level) stay within the schema's bounds
    for (const [field, max] of FIELD_LIMITS) {
      const v = entry[field];
      if (typeof v === 'string' && v.length > max) entry[field] = v.slice(0, max);
    }
    const small = details === undefined ? undefined : smallDetails(details);
    if (small !== undefined) entry.details = small;
    return entry;
  }

  /** The entry of a refused action: outcome failure with the code the caller got. */
  failure(input: Omit<AuditInput, 'outcome' | 'errorCode'>, err: unknown): AuditEntry {
    return this.entry({ ...input, outcome: 'failure', errorCode: errorCodeOf(err) });
  }

  /** Appends `entry` on its own. Never throws; a refused write is logged at error level. */
  async record(entry: AuditEntry): Promise<void> {
    try {
      await this.store.appendAudit([entry]);
    } catch (err) {
      this.failedWrites += 1;
      this.log.error(
        { audit: entry, err: { code: errorCodeOf(err), message: err instanceof Error ? err.message : String(err) } },
        'AUDIT ENTRY NOT WRITTEN: the audit log is missing this entry',
      );
    }
  }
}

/** The stable code of an error, or INTERNAL_ERROR for anything uncoded. */
export function errorCodeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(code) ? code : 'INTERNAL_ERROR';
}

function smallDetails(details: NonNullable<AuditEntry['details']>): AuditEntry['details'] | undefined {
  const out: NonNullable<AuditEntry['details']> = {};
  for (const [k, v] of Object.entries(details)) {
    if (v === undefined) continue;
    out[k] = typeof v === 'string' && v.length > MAX_DETAIL_CHARS ? `${v.slice(0, MAX_DETAIL_CHARS)}...` : v;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

export type { AuditAction, AuditEntry };
