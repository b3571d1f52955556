/** AuditTrail (src/audit): complete entries within the schema's bounds; a refused write is logged, never thrown. */
import { describe, expect, it } from 'vitest';
import { AuditTrail, errorCodeOf } from '../../src/audit/index.js';
import { ProvisioningError } from '../../src/provisioning/index.js';
import { createAjv, getValidator } from '../../src/schemas.js';
import type { AuditEntry } from '../../schemas/types.js';

const clock = { now: () => new Date('2025-03-01T10:00:00.000Z') };
const validate = getValidator<AuditEntry>(createAjv(), 'audit-entry');

describe('AuditTrail', () => {
  it('builds entries that match schemas/audit-entry.json: id, time, success by default, bounded fields and details', () => {
    const trail = new AuditTrail({ appendAudit: async () => undefined }, clock, { error: () => undefined });
    const entry = trail.entry({ tenantId: 'acme', actor: 'apikey:k1', action: 'device.claim', deviceId: 'x'.repeat(300), details: { reason: 'r'.repeat(500), n: 3, ok: true, gone: undefined as unknown as string } });
    expect(validate(entry), JSON.stringify(validate.errors)).toBe(true);
    expect(entry).toMatchObject({ at: '2025-03-01T10:00:00.000Z', outcome: 'success', tenantId: 'acme' });
    expect(entry.id).toMatch(/^[0-9a-f]{32}$/);
    expect(entry.deviceId).toHaveLength(64);
    expect(entry.details).toStrictEqual({ reason: `${'r'.repeat(200)}...`, n: 3, ok: true });
    const failed = trail.failure({ tenantId: 'acme', actor: 'system', action: 'apikey.revoke' }, new ProvisioningError('API_KEY_NOT_FOUND'));
    expect(failed).toMatchObject({ outcome: 'failure', errorCode: 'API_KEY_NOT_FOUND' });
    expect(validate(failed)).toBe(true);
    expect(errorCodeOf(new TypeError('x'))).toBe('INTERNAL_ERROR');
    expect(errorCodeOf({ code: 'ECONNRESET' })).toBe('ECONNRESET');
    expect(errorCodeOf({ code: 'not a code' })).toBe('INTERNAL_ERROR');
  });

  it('record() never throws: a refused write is logged at error level with the entry and counted', async () => {
    const logged: { obj: Record<string, unknown>; msg: string }[] = [];
    const trail = new AuditTrail({ appendAudit: async () => Promise.reject(Object.assign(new Error('disk full'), { code: 'STORE_UNAVAILABLE' })) }, clock, {
      error: (obj, msg) => logged.push({ obj: obj as Record<string, unknown>, msg }),
    });
    const entry = trail.entry({ tenantId: 'acme', actor: 'system', action: 'key.generate', target: 'key:ca/root.key' });
    await expect(trail.record(entry)).resolves.toBeUndefined();
    expect(trail.failedWrites).toBe(1);
    expect(logged).toHaveLength(1);
    expect(logged[0]!.msg).toMatch(/^AUDIT ENTRY NOT WRITTEN/);
    expect(logged[0]!.obj).toMatchObject({ audit: entry, err: { code: 'STORE_UNAVAILABLE', message: 'disk full' } });
  });
});
