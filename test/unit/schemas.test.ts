import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateTypes, generatedPath } from '../../scripts/gen-types.js';
import { createAjv, getValidator, schemaDocuments } from '../../src/schemas.js';

describe('schemas', () => {
  it('schemas/types.ts is what the schemas generate (run `npm run gen:types` after editing a schema)', async () => {
    expect(readFileSync(generatedPath, 'utf8')).toBe(await generateTypes());
  });

  it('every file in schemas/ is registered in src/schemas.ts', () => {
    const files = readdirSync(new URL('../../schemas/', import.meta.url)).filter((f) => f.endsWith('.json'));
    expect(schemaDocuments.map((d) => d.$id.split('/').pop()).sort()).toEqual(files.sort());
  });

  it('every schema compiles in strict mode and has a unique $id', () => {
    const ajv = createAjv();
    const ids = schemaDocuments.map((d) => d.$id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(ajv.getSchema(id)).toBeTypeOf('function');
  });

  it('validates a config acknowledgement and rejects extras', () => {
    const v = getValidator(createAjv(), 'mqtt-config-ack');
    expect(v({ version: 1, items: [{ id: 'network', status: 'applied' }] })).toBe(true);
    expect(v({ version: 1, items: [{ id: 'network', status: 'applied' }], extra: true })).toBe(false);
    expect(v({ version: 0, items: [{ id: 'network', status: 'applied' }] })).toBe(false);
  });
});
