/**
 * Bulk registration for factory lines: thousands of rows per request, each checked on its own,
 * with a result per row. atomic (default): every row is valid or nothing is written; partial: the
 * valid rows are written and the others reported. Re-running the same file is harmless: a row
 * whose device is already registered with the same model (and the same claim code, when the row
 * has one) is "unchanged".
 */
import type { DeviceEvent, DeviceImportResult, ImportRow, ImportRowResult } from '../../schemas/types.js';
import { isProvisiondError } from '../errors.js';
import { describeErrors, getValidator, type Validator } from '../schemas.js';
import { StoreError, type DeviceRecord } from '../store/index.js';
import type { TenantContext } from './context.js';
import type { ProvisioningCore } from './core.js';
import { ProvisioningError } from './errors.js';

export type ImportMode = 'atomic' | 'partial';

export class DeviceImport {
  readonly #validateRow: Validator<ImportRow>;

  constructor(
    private readonly core: ProvisioningCore,
    /** Makes a claim code for rows that have none (src/factory/claim-codes.ts generateClaimCode). */
    private readonly generateCode: () => string,
  ) {
    this.#validateRow = getValidator(core.ajv, 'device-import-request', 'ImportRow');
  }

  async run(ctx: TenantContext, rows: readonly unknown[], mode: ImportMode): Promise<DeviceImportResult> {
    const { store, writer, codes } = this.core;
    const results: ImportRowResult[] = [];
    const toCreate: { result: ImportRowResult; record: DeviceRecord }[] = [];
    const seenIds = new Map<string, number>();
    const seenHashes = new Map<string, number>();
    const now = writer.now();

    // 1. each row on its own
    for (const [i, raw] of rows.entries()) {
      const row = i + 1;
      const fail = (code: string, message: string, id?: string) => results.push({ row, ...(id ? { id } : {}), status: 'failed', code, message });
      if (!this.#validateRow(raw)) {
        fail('INVALID_ROW', describeErrors(this.#validateRow.errors), typeof (raw as { id?: unknown })?.id === 'string' ? (raw as { id: string }).id : undefined);
        continue;
      }
      const { id, model, claimCode } = raw;
      const first = seenIds.get(id);
      if (first !== undefined) {
        fail('DUPLICATE_IN_FILE', `device ${id} is already on row ${first}`, id);
        continue;
      }
      seenIds.set(id, row);
      let hash: string | undefined;
      try {
        hash = claimCode === undefined ? undefined : codes.hashForRegistration(claimCode);
      } catch (err) {
        if (!isProvisiondError(err)) throw err;
        fail(err.code, err.message, id);
        continue;
      }
      const existing = await store.getDevice(id);
      if (existing) {
        const same = existing.tenantId === ctx.tenantId && existing.model === model && (hash === undefined || hash === existing.claimCodeHash);
        if (same) results.push({ row, id, status: 'unchanged' });
        else fail('DEVICE_EXISTS', `device ${id} is already registered${existing.tenantId === ctx.tenantId ? ' with other data' : ''}`, id);
        continue;
      }
      let code = claimCode;
      if (hash === undefined) {
        code = this.generateCode();
        hash = codes.hashForRegistration(code);
      }
      const clash = seenHashes.get(hash);
      if (clash !== undefined || (await store.findDeviceByClaimCodeHash(hash))) {
        fail('CLAIM_CODE_IN_USE', clash !== undefined ? `the claim code is already used on row ${clash}` : 'another device already has this claim code', id);
        continue;
      }
      seenHashes.set(hash, row);
      const result: ImportRowResult = { row, id, status: 'created', ...(claimCode === undefined ? { claimCode: code! } : {}) };
      results.push(result);
      toCreate.push({
        result,
        record: { id, tenantId: ctx.tenantId, model, state: 'registered', createdAt: now, updatedAt: now, claimCodeHash: hash, revision: 1 },
      });
    }

    // 2. write, all or nothing per the mode
    const failed = results.filter((r) => r.status === 'failed').length;
    if (mode === 'atomic' && failed > 0) {
      for (const c of toCreate) {
        c.result.status = 'skipped';
        delete c.result.claimCode;
      }
      return this.#summary(mode, false, results);
    }
    if (toCreate.length > 0) {
      const events: DeviceEvent[] = toCreate.map((c) => writer.event(c.record, 'registered', ctx.actor, { to: 'registered', reason: 'bulk import' }));
      try {
        await store.insertDevices(
          toCreate.map((c) => c.record),
          events,
        );
      } catch (err) {
        // a concurrent registration took an id or a code between the checks and the write
        if (err instanceof StoreError && (err.code === 'DEVICE_EXISTS' || err.code === 'CLAIM_CODE_IN_USE')) {
          throw new ProvisioningError('ISSUANCE_CONFLICT', `device ${String(err.details?.id)} was registered concurrently; run the import again`, { cause: err });
        }
        throw err;
      }
    }
    return this.#summary(mode, true, results);
  }

  #summary(mode: ImportMode, imported: boolean, rows: ImportRowResult[]): DeviceImportResult {
    const count = (s: ImportRowResult['status']) => rows.filter((r) => r.status === s).length;
    return { mode, imported, total: rows.length, created: imported ? count('created') : 0, unchanged: count('unchanged'), failed: count('failed'), rows };
  }
}
