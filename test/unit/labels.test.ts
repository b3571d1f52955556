import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import {
  CROCKFORD_ALPHABET,
  CROCKFORD_CHECK_ALPHABET,
  canonicalClaimCode,
  checkClaimCode,
  claimCodeBytes,
  claimPayload,
  generateClaimCode,
  parseClaimPayload,
} from '../../src/factory/claim-codes.js';
import { type Label, LABELS_PER_PAGE, QR_QUIET_ZONE, escapeXml, labelPng, labelQr, labelSheetHtml, labelSvg } from '../../src/factory/labels.js';
import { normalizeClaimCode } from '../../src/provisioning/claim-codes.js';
import { jsQR } from '../helpers/qr.js';


/** A deterministic byte source (SHA-256 in counter mode). */
function seededRandom(seed: string): (n: number) => Buffer {
  let counter = 0;
  return (n) => {
    const out: Buffer[] = [];
    let have = 0;
    while (have < n) {
      const block = createHash('sha256').update(`${seed}:${counter++}`).digest();
      out.push(block);
      have += block.length;
    }
    return Buffer.concat(out).subarray(0, n);
  };
}

function decodePng(png: Buffer): string | undefined {
  const { width, height, data } = PNG.sync.read(png);
  return jsQR(new Uint8ClampedArray(data.buffer, data.byteOffset, data.length), width, height)?.data;
}

/** RGBA pixels of a module grid (true = dark), `px` pixels per module. */
function gridToRgba(grid: boolean[][], px: number): { data: Uint8ClampedArray; width: number } {
  const width = grid.length * px;
  const data = new Uint8ClampedArray(width * width * 4).fill(255);
  grid.forEach((row, r) =>
    row.forEach((dark, c) => {
      if (!dark) return;
      for (let y = r * px; y < (r + 1) * px; y++)
        for (let x = c * px; x < (c + 1) * px; x++) data.fill(0, (y * width + x) * 4, (y * width + x) * 4 + 3);
    }),
  );
  return { data, width };
}

/** Reads the QR <path> of labelSvg back into a module grid (quiet zone included). */
function svgModules(svg: string, modules: number): boolean[][] {
  const d = /<path [^>]*\bd="([^"]*)"/.exec(svg)?.[1];
  if (d === undefined) throw new Error('no QR path in SVG');
  const grid = Array.from({ length: modules }, () => Array<boolean>(modules).fill(false));
  const re = /M(\d+) (\d+)h(\d+)v1h-(\d+)z/gy;
  let m: RegExpExecArray | null;
  let consumed = 0;
  while ((m = re.exec(d))) {
    const [x, y, run, back] = m.slice(1).map(Number) as [number, number, number, number];
    expect(back).toBe(run);
    for (let i = 0; i < run; i++) grid[y]![x + i] = true;
    consumed = re.lastIndex;
  }
  expect(consumed).toBe(d.length);
  return grid;
}

/**
 * A small XML well-formedness check (no DTD): one root, matched tags, quoted unique attributes,
 * no raw '<' or stray '&' in text or attributes, only known entity references.
 */
function assertWellFormedXml(xml: string): void {
  const name = '[A-Za-z_:][-A-Za-z0-9_.:]*';
  const ref = '&(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9A-Fa-f]+);';
  const text = new RegExp(`^(?:[^<&]|${ref})*$`);
  const attrValue = new RegExp(`^(?:[^<&"]|${ref})*$`);
  const tag = new RegExp(`^<(/?)(${name})((?:\\s+${name}\\s*=\\s*"[^"]*")*)\\s*(/?)>`);
  const stack: string[] = [];
  let roots = 0;
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const chunk = xml.slice(i, lt < 0 ? xml.length : lt);
    if (!text.test(chunk)) throw new Error(`bad text at ${i}: ${chunk.slice(0, 40)}`);
    if (stack.length === 0 && chunk.trim()) throw new Error(`text outside the root at ${i}`);
    if (lt < 0) break;
    const m = tag.exec(xml.slice(lt));
    if (!m) throw new Error(`bad tag at ${lt}: ${xml.slice(lt, lt + 60)}`);
    const [whole, close, tagName, attrs, selfClose] = m as unknown as [string, string, string, string, string];
    const seen = new Set<string>();
    for (const a of attrs.matchAll(new RegExp(`(${name})\\s*=\\s*"([^"]*)"`, 'g'))) {
      if (seen.has(a[1]!)) throw new Error(`duplicate attribute ${a[1]} on <${tagName}>`);
      seen.add(a[1]!);
      if (!attrValue.test(a[2]!)) throw new Error(`bad attribute value ${a[1]}="${a[2]}"`);
    }
    if (close) {
      if (attrs || selfClose) throw new Error(`bad end tag ${whole}`);
      if (stack.pop() !== tagName) throw new Error(`mismatched </${tagName}> at ${lt}`);
    } else {
      if (stack.length === 0 && ++roots > 1) throw new Error('more than one root element');
      if (!selfClose) stack.push(tagName);
    }
    i = lt + whole.length;
  }
  if (stack.length) throw new Error(`unclosed <${stack.join('>, <')}>`);
  if (roots !== 1) throw new Error('no root element');
}

const python = spawnSync('python3', ['-c', 'import xml.parsers.expat'], { stdio: 'ignore' }).status === 0;
const rsvg = spawnSync('rsvg-convert', ['--version'], { stdio: 'ignore' }).status === 0;

const fixed = (hex: string) => () => Buffer.from(hex, 'hex');

describe('generateClaimCode', () => {
  it('encodes 80 bits as 16 Crockford symbols plus a mod-37 check symbol, grouped', () => {
    expect(generateClaimCode(fixed('00000000000000000000'))).toBe('0000-0000-0000-0000-0');
    expect(generateClaimCode(fixed('00000000000000000001'))).toBe('0000-0000-0000-0001-1');
    // 2^80 - 1 = ZZZZ...Z; 2^36 ≡ 1 (mod 37) so 2^80 ≡ 2^8 = 256 ≡ 34 and 2^80 - 1 ≡ 33, symbol '~'.
    expect(generateClaimCode(fixed('ffffffffffffffffffff'))).toBe('ZZZZ-ZZZZ-ZZZZ-ZZZZ-~');
    // 32 ≡ 32 → '*'; 36 → 'U' (only ever a check symbol).
    expect(generateClaimCode(fixed('00000000000000000020'))).toBe('0000-0000-0000-0010-*');
    expect(generateClaimCode(fixed('00000000000000000024'))).toBe('0000-0000-0000-0014-U');
  });

  it('is deterministic under an injected random function and asks it for exactly 10 bytes', () => {
    const asked: number[] = [];
    const rnd = seededRandom('det');
    const a = generateClaimCode((n) => (asked.push(n), rnd(n)));
    const b = generateClaimCode(seededRandom('det'));
    expect(a).toBe(b);
    expect(asked).toEqual([10]);
    expect(a).toMatch(/^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}-[0-9A-HJKMNP-TV-Z*~$=U]$/);
    expect(() => generateClaimCode(() => Buffer.alloc(9))).toThrow(RangeError);
  });

  it('carries 80 bits: every code decodes back to the 10 bytes drawn; 10,000 codes are distinct', () => {
    const codes = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const bytes = randomBytes(10);
      const code = generateClaimCode(() => bytes);
      expect(claimCodeBytes(code)).toEqual(bytes);
      codes.add(code);
    }
    expect(codes.size).toBe(10_000);
    // And with the default source.
    const c = generateClaimCode();
    expect(checkClaimCode(c)).toBe('ok');
    expect(claimCodeBytes(c)).toHaveLength(10);
  });
});

describe('checkClaimCode', () => {
  const rnd = seededRandom('sample');
  const sample = Array.from({ length: 60 }, () => generateClaimCode(rnd));

  it('detects every single-symbol substitution', () => {
    for (const code of sample) {
      const s = code.replace(/-/g, '');
      for (let pos = 0; pos < s.length; pos++) {
        for (const sub of CROCKFORD_CHECK_ALPHABET) {
          if (sub === s[pos]) continue;
          const typo = s.slice(0, pos) + sub + s.slice(pos + 1);
          const dataPos = pos < 16;
          const expected = dataPos && !CROCKFORD_ALPHABET.includes(sub) ? 'malformed' : 'bad-check';
          expect(checkClaimCode(typo), `${code} → ${typo}`).toBe(expected);
        }
      }
    }
  });

  it('detects every adjacent transposition, including the last data symbol with the check symbol', () => {
    for (const code of sample) {
      const s = code.replace(/-/g, '');
      for (let pos = 0; pos + 1 < s.length; pos++) {
        if (s[pos] === s[pos + 1]) continue;
        const swapped = s.slice(0, pos) + s[pos + 1] + s[pos] + s.slice(pos + 2);
        expect(checkClaimCode(swapped), `${code} → ${swapped}`).not.toBe('ok');
      }
    }
  });

  it('accepts lower case, spaces, any dashes and the Crockford confusions O→0, I/L→1', () => {
    const code = generateClaimCode(fixed('00401004010040118bea')); // many 0s and 1s
    expect(code).toMatch(/0/);
    expect(code).toMatch(/1/);
    const typed = code.toLowerCase().replace(/0/g, 'o').replace(/1/g, (_, i: number) => (i % 2 ? 'l' : 'I')).replace(/-/g, ' ');
    expect(checkClaimCode(code)).toBe('ok');
    expect(checkClaimCode(typed)).toBe('ok');
    expect(checkClaimCode(`  ${code.replace(/-/g, '')}  `)).toBe('ok');
    expect(checkClaimCode(code.replace(/-/g, '').replace(/(.)/g, '$1-'))).toBe('ok');
    expect(checkClaimCode('zzzz zzzz zzzz zzzz ~')).toBe('ok');
    expect(checkClaimCode('0000-0000-0000-0014-u')).toBe('ok');
    expect(canonicalClaimCode(typed)).toBe(code);
  });

  it('says malformed for anything not shaped like one of our codes', () => {
    for (const bad of ['', 'hello', '0000-0000-0000-0000', '0000-0000-0000-0000-00', 'U000-0000-0000-0000-0', '0000_0000-0000-0000-0', '0000-0000-0000-000*-0'])
      expect(checkClaimCode(bad), bad).toBe('malformed');
    expect(checkClaimCode('0000-0000-0000-0000-1')).toBe('bad-check');
    expect(canonicalClaimCode('0000-0000-0000-0000-1')).toBeUndefined();
    expect(canonicalClaimCode('factory-registered code')).toBeUndefined();
  });

  it('canonical form + the service normalisation hashes a mistyped code like the generated one', () => {
    const code = generateClaimCode(fixed('00401004010040118bea'));
    const typed = code.toLowerCase().replace(/0/g, 'o').replace(/1/g, 'l');
    // The service's normalisation alone does not undo the confusions...
    expect(normalizeClaimCode(typed)).not.toBe(normalizeClaimCode(code));
    // ...the documented canonicalisation does, and leaves foreign codes as they were.
    const forHash = (input: string) => normalizeClaimCode(canonicalClaimCode(input) ?? input);
    expect(forHash(typed)).toBe(normalizeClaimCode(code));
    expect(forHash(code)).toBe(normalizeClaimCode(code));
    expect(normalizeClaimCode(code)).toBe(code.replace(/-/g, ''));
    expect(forHash('Factory code-17')).toBe(normalizeClaimCode('Factory code-17'));
  });
});

describe('claim payload', () => {
  const code = generateClaimCode(seededRandom('payload'));

  it('is a provisiond:claim URI with URL-encoded values and the code without dashes', () => {
    expect(claimPayload('dev-1', code)).toBe(`provisiond:claim?d=dev-1&c=${code.replace(/-/g, '')}`);
    expect(claimPayload('a<b&"c d=e+f/ü', '0000-0000-0000-0014-U')).toBe('provisiond:claim?d=a%3Cb%26%22c%20d%3De%2Bf%2F%C3%BC&c=0000000000000014U');
    // Our codes are canonicalised first; the check symbols $ and = are percent-encoded.
    expect(claimPayload('x', 'zzzz zzzz zzzz zzzz ~')).toBe('provisiond:claim?d=x&c=ZZZZZZZZZZZZZZZZ~');
    expect(generateClaimCode(fixed('00000000000000000022'))).toBe('0000-0000-0000-0012-$');
    expect(claimPayload('x', '0000-0000-0000-0012-$')).toBe('provisiond:claim?d=x&c=0000000000000012%24');
    expect(parseClaimPayload('provisiond:claim?d=x&c=0000000000000012%24')).toEqual({ deviceId: 'x', claimCode: '0000-0000-0000-0012-$' });
  });

  it('round-trips', () => {
    const ids = ['dev-1', 'a<b&"c', 'with space', 'plus+equals=amp&hash#pct%', 'Gerät-ü-😀', '3f1c9a4e-7b2d-4c8e-9f01-a2b3c4d5e6f7'];
    const rnd = seededRandom('roundtrip');
    for (const deviceId of ids) {
      for (let i = 0; i < 20; i++) {
        const claimCode = generateClaimCode(rnd);
        expect(parseClaimPayload(claimPayload(deviceId, claimCode))).toEqual({ deviceId, claimCode });
      }
    }
    // Foreign codes come back as they were put in the payload (dashes and spaces dropped).
    expect(parseClaimPayload(claimPayload('d1', 'Factory code-17'))).toEqual({ deviceId: 'd1', claimCode: 'Factorycode17' });
  });

  it('accepts a plain claim code alone (ours only), a scheme in any case, and refuses anything else', () => {
    expect(parseClaimPayload(code)).toEqual({ claimCode: code });
    expect(parseClaimPayload(` ${code.toLowerCase().replace(/-/g, '')}\n`)).toEqual({ claimCode: code });
    expect(parseClaimPayload(`PROVISIOND:CLAIM?d=x&c=${code.replace(/-/g, '')}`)).toEqual({ deviceId: 'x', claimCode: code });
    expect(parseClaimPayload(`provisiond:claim?c=${code}`)).toEqual({ claimCode: code });
    for (const other of ['', 'https://example.com/', 'provisiond:claim?d=x', 'provisiond:claim?d=x&c=', 'not a code', '0000-0000-0000-0000-1'])
      expect(parseClaimPayload(other), other).toBeUndefined();
  });
});

describe('labels', () => {
  const rnd = seededRandom('labels');
  const labels: Label[] = [
    { deviceId: 'dev-0001', claimCode: generateClaimCode(rnd), model: 'Thermostat T-200' },
    { deviceId: 'a<b&"c', claimCode: generateClaimCode(rnd), model: 'Model <X> & "Y"' },
    { deviceId: '3f1c9a4e-7b2d-4c8e-9f01-a2b3c4d5e6f7', claimCode: generateClaimCode(rnd) },
    { deviceId: 'Gerät-ü-😀-' + 'x'.repeat(60), claimCode: generateClaimCode(rnd), model: 'Valve' },
    { deviceId: 'foreign', claimCode: 'Factory code-17' },
  ];

  it('PNG: the QR code decodes back to the claim payload (jsQR over pngjs pixels)', async () => {
    for (const label of labels) {
      const png = await labelPng(label);
      expect(png.subarray(1, 4).toString()).toBe('PNG');
      expect(decodePng(png), label.deviceId).toBe(claimPayload(label.deviceId, label.claimCode));
    }
    const small = await labelPng(labels[0]!, { scale: 3 });
    expect(decodePng(small)).toBe(claimPayload(labels[0]!.deviceId, labels[0]!.claimCode));
    await expect(labelPng(labels[0]!, { scale: 0 })).rejects.toThrow(RangeError);
  });

  it('PNG: has the 4-module quiet zone and the same modules as the SVG', async () => {
    for (const label of labels) {
      const { size } = labelQr(label);
      const png = PNG.sync.read(await labelPng(label, { scale: 1 }));
      const modules = size + 2 * QR_QUIET_ZONE;
      expect(png.width).toBe(modules);
      expect(png.height).toBe(modules);
      const fromSvg = svgModules(labelSvg(label), modules);
      for (let y = 0; y < modules; y++)
        for (let x = 0; x < modules; x++) {
          const dark = png.data[(y * modules + x) * 4]! < 128;
          expect(dark, `module ${x},${y}`).toBe(fromSvg[y]![x]);
          if (x < QR_QUIET_ZONE || y < QR_QUIET_ZONE || x >= modules - QR_QUIET_ZONE || y >= modules - QR_QUIET_ZONE) expect(dark).toBe(false);
        }
    }
  });

  it('SVG: its vector QR modules decode back to the claim payload', () => {
    for (const label of labels) {
      const modules = labelQr(label).size + 2 * QR_QUIET_ZONE;
      const { data, width } = gridToRgba(svgModules(labelSvg(label), modules), 4);
      expect(jsQR(data, width, width)?.data).toBe(claimPayload(label.deviceId, label.claimCode));
    }
  });

  it('SVG: a self-contained 50 x 30 mm document with the id, model and grouped code as escaped text', () => {
    const svg = labelSvg(labels[1]!);
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="50mm" height="30mm" viewBox="0 0 50 30"/);
    expect(svg).not.toMatch(/\b(?:href|id|src)=|url\(/);
    expect(svg).toContain('>a&lt;b&amp;&quot;c</text>');
    expect(svg).toContain('>Model &lt;X&gt; &amp; &quot;Y&quot;</text>');
    expect(svg).not.toContain('a<b');
    expect(svg).toContain(`>${labels[1]!.claimCode}</text>`);
    expect(svg).toMatch(/font-family="[^"]*monospace"[^>]*>[0-9A-Z]{4}-/);
    const three = labelSvg(labels[2]!);
    expect(three).not.toContain('undefined');
    expect(three.match(/font-weight="bold"/g)).toHaveLength(1); // only the code: no model line
    // A long id wraps over several lines; together they give the id back.
    const long = labelSvg(labels[3]!);
    const idLines = [...long.matchAll(/font-size="[\d.]+" fill="#000"(?: textLength="[\d.]+" lengthAdjust="spacingAndGlyphs")? xml:space="preserve">([^<]*)<\/text>/g)].map((m) => m[1]);
    expect(idLines.join('')).toBe(labels[3]!.deviceId);
    // Characters XML forbids cannot break the document.
    const controls = labelSvg({ deviceId: 'nul\u0000bell\u0007\uFFFE', claimCode: 'x', model: 'm\u001B' });
    assertWellFormedXml(controls);
    expect(controls).toContain('>nul\uFFFDbell\uFFFD\uFFFD</text>');
    expect(() => labelSvg({ deviceId: 'lone \uD800', claimCode: 'x' })).toThrow(/deviceId is not well-formed Unicode/);
    expect(escapeXml('\u0000<\'>\uD800\uDC00\uDC00')).toBe('\uFFFD&lt;&#39;&gt;\uD800\uDC00\uFFFD');
  });

  it('SVG: is well-formed XML (built-in checker, and Python expat when available)', () => {
    const svgs = labels.map(labelSvg);
    for (const svg of svgs) assertWellFormedXml(svg);
    expect(() => assertWellFormedXml('<svg><text>a<b</text></svg>')).toThrow();
    expect(() => assertWellFormedXml('<svg><text>a&b</text></svg>')).toThrow();
    expect(() => assertWellFormedXml('<svg><g></svg>')).toThrow();
    if (!python) return;
    const script = 'import sys, json, xml.parsers.expat\nfor s in json.load(sys.stdin):\n  p = xml.parsers.expat.ParserCreate(); p.Parse(s, True)\nprint("ok")';
    const out = spawnSync('python3', ['-c', script], { input: JSON.stringify(svgs), encoding: 'utf8' });
    expect(out.stderr).toBe('');
    expect(out.stdout.trim()).toBe('ok');
  });

  it('SVG → PNG with rsvg-convert decodes back to the claim payload', (ctx) => {
    ctx.skip(!rsvg, 'rsvg-convert (librsvg2-bin) is not installed on this machine; the vector QR is decoded above instead');
    const dir = mkdtempSync(join(tmpdir(), 'labels-'));
    try {
      for (const label of labels) {
        const svgPath = join(dir, 'label.svg');
        const pngPath = join(dir, 'label.png');
        writeFileSync(svgPath, labelSvg(label));
        const r = spawnSync('rsvg-convert', ['--dpi-x', '600', '--dpi-y', '600', '-b', 'white', '-o', pngPath, svgPath]);
        expect(r.status, r.stderr?.toString()).toBe(0);
        expect(decodePng(readFileSync(pngPath))).toBe(claimPayload(label.deviceId, label.claimCode));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sheet: an A4 HTML page with every label, page breaks and escaping', () => {
    const many: Label[] = Array.from({ length: LABELS_PER_PAGE + 6 }, (_, i) => ({
      deviceId: i === 3 ? 'a<b&"c' : `dev-${String(i).padStart(4, '0')}`,
      claimCode: generateClaimCode(rnd),
      model: 'T-200',
    }));
    const html = labelSheetHtml(many, { title: 'Batch <7> & "co"' });
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).toContain('@page { size: A4');
    expect(html).toContain('<title>Batch &lt;7&gt; &amp; &quot;co&quot;</title>');
    expect(html).not.toContain('<7>');
    for (const label of many) {
      expect(html).toContain(`data-device-id="${escapeXml(label.deviceId)}">${labelSvg(label)}</div>`);
    }
    expect(html.match(/<svg /g)).toHaveLength(many.length);
    expect(html.match(/<section class="page">/g)).toHaveLength(2);
    expect(html).toContain('Page 2 of 2');
    expect(html).toMatch(/\.page \{[^}]*break-after: page/);
    expect(html).not.toContain('a<b');
    expect(labelSheetHtml([]).match(/<svg /g)).toBeNull();
  });
});
