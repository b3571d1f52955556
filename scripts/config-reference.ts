/**
 * Prints the configuration reference (markdown table) from schemas/config.json. The README embeds
 * it between <!-- config-reference:start --> and <!-- config-reference:end -->; a test checks
 * that the README holds exactly what this prints. `npm run docs:config` rewrites it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { envName } from '../src/config/index.js';

interface Prop {
  type?: string;
  default?: unknown;
  description?: string;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  properties?: Record<string, Prop>;
  $ref?: string;
  allOf?: { $ref: string }[];
}

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const README = join(root, 'README.md');
const START = '<!-- config-reference:start -->';
const END = '<!-- config-reference:end -->';

export function configReference(): string {
  const schema = JSON.parse(readFileSync(join(root, 'schemas', 'config.json'), 'utf8')) as Prop;
  const rows: string[] = ['| setting | environment variable | default | allowed | description |', '| --- | --- | --- | --- | --- |'];
  const walk = (props: Record<string, Prop>, path: string[]) => {
    for (const [name, p] of Object.entries(props)) {
      const here = [...path, name];
      if (p.type === 'object' && p.properties) {
        walk(p.properties, here);
        continue;
      }
      const ref = p.$ref ?? p.allOf?.[0]?.$ref;
      const allowed = p.enum
        ? p.enum.join(', ')
        : ref
          ? `JSON object per \`schemas/${ref.split('/').pop()}\``
          : [p.type, p.minimum !== undefined ? `>= ${p.minimum}` : '', p.maximum !== undefined ? `<= ${p.maximum}` : ''].filter(Boolean).join(' ');
      const def = p.default === undefined ? '' : `\`${JSON.stringify(p.default)}\``;
      rows.push(`| \`${here.join('.')}\` | \`${envName(here)}\` | ${def} | ${allowed} | ${(p.description ?? '').replaceAll('|', '\\|')} |`);
    }
  };
  walk(schema.properties ?? {}, []);
  return rows.join('\n');
}

export function embed(readme: string): string {
  const a = readme.indexOf(START);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error('README.md lacks the config-reference markers');
  return `${readme.slice(0, a + START.length)}\n${configReference()}\n${readme.slice(b)}`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(README, embed(readFileSync(README, 'utf8')));
  console.log('README.md configuration reference updated');
}
