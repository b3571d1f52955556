/** Bulk registration from CSV and JSON: per-row results, atomic or partial, harmless re-runs. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClaimResponse, DeviceImportResult, ErrorBody } from '../../schemas/types.js';
import { checkClaimCode, claimPayload, parseClaimPayload } from '../../src/factory/claim-codes.js';
import { decodeQrPng } from '../helpers/qr.js';
import { startTestService, type TestService } from '../helpers/service.js';

let ts: TestService;
beforeAll(async () => {
  ts = await startTestService();
});
afterAll(async () => {
  await ts?.stop();
});

const auth = (key: string) => ({ authorization: `Bearer ${key}` });
const csvImport = (body: string, mode = 'atomic', key = ts.keys.factory) =>
  ts.running.api.inject({ method: 'POST', url: `/v1/devices/import?mode=${mode}`, headers: { ...auth(key), 'content-type': 'text/csv' }, payload: body });
const jsonImport = (devices: unknown[], mode = 'atomic') =>
  ts.running.api.inject({ method: 'POST', url: `/v1/devices/import?mode=${mode}`, headers: auth(ts.keys.factory), payload: { devices } });
const total = async () => Object.values(await ts.running.store.countDevicesByState('default')).reduce((a, b) => a + (b ?? 0), 0);

describe('bulk registration', () => {
  it('imports 10,000 rows from CSV, and importing the same file again changes nothing', async () => {
    const lines = ['id,model,claimCode'];
    for (let i = 0; i < 10_000; i++) lines.push(`line7-${String(i).padStart(5, '0')},${i % 2 ? 'camera' : 'thermostat'},LBL-${i.toString(36).padStart(6, '0')}-7Q2X`);
    const csv = lines.join('\r\n') + '\r\n';
    const before = await total();
    const t0 = Date.now();
    const first = await csvImport(csv);
    const ms = Date.now() - t0;
    expect(first.statusCode).toBe(200);
    const r1 = first.json() as DeviceImportResult;
    expect(r1).toMatchObject({ mode: 'atomic', imported: true, total: 10_000, created: 10_000, unchanged: 0, failed: 0 });
    expect(await total()).toBe(before + 10_000);
    expect(ms).toBeLessThan(60_000);
    const sample = await ts.running.store.getDevice('line7-04242');
    expect(sample).toMatchObject({ model: 'thermostat', state: 'registered', tenantId: 'default' });
    expect(JSON.stringify(sample)).not.toContain('LBL-');

    const second = await csvImport(csv);
    expect(second.json()).toMatchObject({ imported: true, total: 10_000, created: 0, unchanged: 10_000, failed: 0 });
    expect(await total()).toBe(before + 10_000);
    expect(await ts.running.store.getDevice('line7-04242')).toEqual(sample);
    expect(await ts.running.store.listEvents('line7-04242')).toHaveLength(1);
  }, 120_000);

  it('generates claim codes for rows without one, shows them once, and they claim the device', async () => {
    const res = await jsonImport([{ id: 'gen-1', model: 'camera' }, { id: 'gen-2', model: 'camera' }]);
    const r = res.json() as DeviceImportResult;
    expect(r.created).toBe(2);
    const code = r.rows[0]!.claimCode!;
    expect(code).toMatch(/^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-.$/);
    expect(checkClaimCode(code)).toBe('ok');
    expect(r.rows[1]!.claimCode).not.toBe(code);
    const again = (await jsonImport([{ id: 'gen-1', model: 'camera' }])).json() as DeviceImportResult;
    expect(again.rows[0]).toEqual({ row: 1, id: 'gen-1', status: 'unchanged' });
    // typed on a phone: lower case, no dashes, and the Crockford confusions (0 as O, 1 as I or L)
    const typed = code.replaceAll('-', ' ').toLowerCase().replaceAll('0', 'o').replaceAll('1', 'l');
    const claim = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: typed, owner: 'o', site: 's' } });
    expect((claim.json() as ClaimResponse).device.id).toBe('gen-1');
  });

  it('atomic: one bad row and nothing is written; every row says what happened', async () => {
    await jsonImport([{ id: 'taken-1', model: 'thermostat', claimCode: 'taken-code-0001' }]);
    const before = await total();
    const res = await jsonImport([
      { id: 'ok-1', model: 'thermostat', claimCode: 'fresh-code-0001' },
      { id: 'bad id', model: 'thermostat' },
      { id: 'ok-1', model: 'camera' },
      { id: 'short-1', model: 'thermostat', claimCode: 'ab-cd-ef-g' },
      { id: 'taken-1', model: 'camera' },
      { id: 'clash-1', model: 'camera', claimCode: 'taken-code-0001' },
      { id: 'extra-1', model: 'camera', colour: 'red' },
    ]);
    expect(res.statusCode).toBe(422);
    const r = res.json() as DeviceImportResult;
    expect(r).toMatchObject({ imported: false, created: 0, failed: 6 });
    expect(r.rows.map((x) => [x.row, x.status, x.code])).toEqual([
      [1, 'skipped', undefined],
      [2, 'failed', 'INVALID_ROW'],
      [3, 'failed', 'DUPLICATE_IN_FILE'],
      [4, 'failed', 'CLAIM_CODE_TOO_SHORT'],
      [5, 'failed', 'DEVICE_EXISTS'],
      [6, 'failed', 'CLAIM_CODE_IN_USE'],
      [7, 'failed', 'INVALID_ROW'],
    ]);
    expect(await total()).toBe(before);
    expect(await ts.running.store.getDevice('ok-1')).toBeUndefined();
  });

  it('partial: the valid rows are written, the others reported exactly', async () => {
    const before = await total();
    const res = await csvImport('id,model\npart-1,camera\n"part 2",camera\npart-3,"thermo,stat"\npart-4,hub\n', 'partial');
    expect(res.statusCode).toBe(200);
    const r = res.json() as DeviceImportResult;
    expect(r).toMatchObject({ imported: true, created: 2, failed: 2 });
    expect(r.rows.filter((x) => x.status === 'failed').map((x) => x.row)).toEqual([2, 3]);
    expect(await total()).toBe(before + 2);
  });

  it('refuses unreadable CSV and other roles; another tenant’s id is DEVICE_EXISTS without details', async () => {
    const code = (res: { json: () => unknown }) => (res.json() as ErrorBody).code;
    expect(code(await csvImport('id,model,colour\nx,y,z\n'))).toBe('INVALID_CSV');
    expect(code(await csvImport('id,claimCode\nx,y\n'))).toBe('INVALID_CSV');
    expect(code(await csvImport('id,model\n"x,y\n'))).toBe('INVALID_CSV');
    expect(code(await csvImport('id,model\nx,y\n', 'atomic', ts.keys.installer))).toBe('ROLE_FORBIDDEN');
    expect(code(await ts.running.api.inject({ method: 'POST', url: '/v1/devices/import', headers: auth(ts.keys.factory), payload: { devices: [] } }))).toBe('SCHEMA_INVALID');
    const other = await ts.tenant('other-co');
    const res = await ts.running.api.inject({ method: 'POST', url: '/v1/devices/import', headers: auth(other.factory), payload: { devices: [{ id: 'gen-2', model: 'camera' }] } });
    const row = (res.json() as DeviceImportResult).rows[0]!;
    expect(row).toMatchObject({ status: 'failed', code: 'DEVICE_EXISTS', message: 'device gen-2 is already registered' });
  });
});

describe('labels', () => {
  it('renders labels whose QR code decodes back to the claim payload, which claims the device', async () => {
    const r = (await jsonImport([{ id: 'label-1', model: 'thermostat' }])).json() as DeviceImportResult;
    const code = r.rows[0]!.claimCode!;
    const png = await ts.running.api.inject({ method: 'POST', url: '/v1/labels', headers: auth(ts.keys.factory), payload: { format: 'png', labels: [{ deviceId: 'label-1', claimCode: code, model: 'thermostat' }] } });
    expect(png.headers['content-type']).toBe('image/png');
    const decoded = decodeQrPng(png.rawPayload);
    expect(decoded).toBe(claimPayload('label-1', code));
    const parsed = parseClaimPayload(decoded!)!;
    const claim = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: parsed.claimCode, deviceId: parsed.deviceId, owner: 'o', site: 's' } });
    expect(claim.statusCode).toBe(201);

    const svg = await ts.running.api.inject({ method: 'POST', url: '/v1/labels', headers: auth(ts.keys.factory), payload: { format: 'svg', labels: [{ deviceId: 'label-1', claimCode: code }] } });
    expect(svg.headers['content-type']).toBe('image/svg+xml');
    expect(svg.body).toContain(code);
    const sheet = await ts.running.api.inject({ method: 'POST', url: '/v1/labels', headers: auth(ts.keys.factory), payload: { format: 'html', labels: [{ deviceId: 'a-1', claimCode: code }, { deviceId: 'a-2', claimCode: code }] } });
    expect(sheet.body).toContain('a-2');
    const two = await ts.running.api.inject({ method: 'POST', url: '/v1/labels', headers: auth(ts.keys.factory), payload: { format: 'png', labels: [{ deviceId: 'a', claimCode: 'x' }, { deviceId: 'b', claimCode: 'y' }] } });
    expect((two.json() as ErrorBody).code).toBe('SCHEMA_INVALID');
    const viewer = await ts.running.api.inject({ method: 'POST', url: '/v1/labels', headers: auth(ts.keys.viewer), payload: { format: 'svg', labels: [{ deviceId: 'a', claimCode: 'x' }] } });
    expect((viewer.json() as ErrorBody).code).toBe('ROLE_FORBIDDEN');
  });
});
