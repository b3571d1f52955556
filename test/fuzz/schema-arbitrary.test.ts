/**
 * The fuzzers' JSON-Schema generators (test/helpers/schema-arbitrary.ts) against the schemas the
 * service validates with: every valid value is accepted, every mutated value rejected, by the
 * service's own Ajv.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { schemaRef, type SchemaName } from '../../src/schemas.js';
import { FUZZ_RUNS, fuzzParams } from '../helpers/fuzz.js';
import { SchemaArbitraries, materialize } from '../helpers/schema-arbitrary.js';

/** Every schema a client or a device sends. */
const INPUT_SCHEMAS: SchemaName[] = [
  'api-key-create-request',
  'claim-request',
  'device-import-request',
  'device-register-request',
  'factory-bundles-request',
  'factory-issue-request',
  'labels-request',
  'manufacturer-ca-request',
  'profile-request',
  'tenant-create-request',
  'tenant-update-request',
  'network-settings',
  'security-policy',
  'mqtt-csr-request',
  'mqtt-config-ack',
  'mqtt-hub-claim',
  'mqtt-telemetry',
];

const arbs = new SchemaArbitraries();
const runs = Math.min(FUZZ_RUNS, 1000);

describe('schema arbitraries', () => {
  it.each(INPUT_SCHEMAS)('%s: valid values pass, mutated values fail', (name) => {
    const at = arbs.locate(schemaRef(name));
    const validate = arbs.validator(at);
    fc.assert(
      fc.property(arbs.valid(schemaRef(name), { hugeLength: 2000 }), (v) => {
        expect(validate(materialize(v)), JSON.stringify(validate.errors)).toBe(true);
      }),
      fuzzParams(runs),
    );
    const seen = new Set<string>();
    fc.assert(
      fc.property(arbs.invalid(schemaRef(name), { hugeLength: 2000 }), ({ value, mutation }) => {
        seen.add(mutation.split(' ')[0]!);
        expect(validate(materialize(value)), mutation).toBe(false);
      }),
      fuzzParams(runs),
    );
    // the mutations reach more than the root's type
    if (name !== 'mqtt-telemetry') expect(seen.size, [...seen].join(', ')).toBeGreaterThan(3);
  });

  it('inline route schemas (params, querystring) with $refs to common.json', () => {
    const params = arbs.locate({ type: 'object', required: ['id'], properties: { id: { $ref: `${schemaRef('common')}#/definitions/DeviceId` } } });
    const validate = arbs.validator(params);
    fc.assert(fc.property(arbs.valid({ type: 'object', required: ['id'], properties: { id: { $ref: `${schemaRef('common')}#/definitions/DeviceId` } } }), (v) => validate(v) === true), fuzzParams(runs));
  });
});
