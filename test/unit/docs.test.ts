/** docs stay true of the code: what can be checked mechanically is checked here. */
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { README, configReference, embed } from '../../scripts/config-reference.js';
import { AlertsError } from '../../src/alerts/index.js';
import { BrokerError } from '../../src/broker/index.js';
import { CaError } from '../../src/ca/index.js';
import { LifecycleError } from '../../src/policy/index.js';
import { ProvisioningError, SecretError } from '../../src/provisioning/index.js';
import { StoreError } from '../../src/store/index.js';

const read = (f: string) => readFileSync(new URL(`../../${f}`, import.meta.url), 'utf8');

describe('documentation', () => {
  it('README holds the configuration reference generated from schemas/config.json (npm run docs:config)', () => {
    const readme = readFileSync(README, 'utf8');
    expect(readme).toContain(configReference());
    expect(embed(readme)).toBe(readme);
  });

  it('README names exactly the two set-up commands', () => {
    const readme = read('README.md');
    const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!.trim());
    expect(blocks.slice(0, 2)).toEqual(['npm ci && npm run demo', 'npm test']);
  });

  it('docs/security.md names only tests that exist, each with its directory', () => {
    const security = read('docs/security.md');
    const named = [...security.matchAll(/`((?:test\/[\w/.-]+)|([\w.-]+\.test\.ts))`/g)].map((m) => m[1]!);
    expect(named.length).toBeGreaterThan(20);
    const files = named.filter((n) => n.startsWith('test/'));
    for (const f of files) expect(existsSync(new URL(`../../${f}`, import.meta.url)), f).toBe(true);
    // a bare file name must have been named with its directory somewhere on the page
    for (const bare of named.filter((n) => !n.startsWith('test/'))) expect(files.some((f) => f.endsWith(`/${bare}`)), bare).toBe(true);
  });

  it('every error code a client can meet is documented in docs/operations.md', () => {
    const ops = read('docs/operations.md');
    for (const family of [ProvisioningError, CaError, LifecycleError, AlertsError, SecretError, StoreError, BrokerError]) {
      for (const code of Object.keys(family.codes)) expect(ops, code).toContain(`\`${code}\``);
    }
  });
});
