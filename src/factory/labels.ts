/**
 * Factory labels: one per device, with the device id, the model and the claim code as text and as
 * a QR code (error correction level M) whose text is `claimPayload(deviceId, claimCode)`.
 *
 * - labelSvg: a self-contained 50 x 30 mm SVG, QR as vector modules, text in a monospace font.
 * - labelPng: a PNG of the QR code alone, with the standard 4-module quiet zone.
 * - labelSheetHtml: a printable A4 page of SVG labels (3 x 8 per page).
 */
import QRCode from 'qrcode';
import { canonicalClaimCode, claimPayload } from './claim-codes.js';

export interface Label {
  deviceId: string;
  claimCode: string;
  model?: string;
}

export const LABEL_WIDTH_MM = 50;
export const LABEL_HEIGHT_MM = 30;
/** Modules of white around the symbol, as the QR standard asks. */
export const QR_QUIET_ZONE = 4;
export const QR_ERROR_CORRECTION = 'M';

const LABELS_PER_ROW = 3;
const ROWS_PER_PAGE = 8;
export const LABELS_PER_PAGE = LABELS_PER_ROW * ROWS_PER_PAGE;

const MONO = "'DejaVu Sans Mono', 'Liberation Mono', Menlo, Consolas, 'Courier New', monospace";
const SANS = "'DejaVu Sans', 'Liberation Sans', Arial, Helvetica, sans-serif";
/** Advance width of a monospace glyph, in em (DejaVu Sans Mono 0.602, Courier 0.6). */
const MONO_ADVANCE = 0.6;
/** A generous average advance for sans-serif text, in em. */
const SANS_ADVANCE = 0.62;

// Characters XML 1.0 does not allow at all (C0 controls but tab/LF/CR, U+FFFE/U+FFFF, lone surrogates).
const XML_INVALID = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** Escapes text for XML/HTML content and attribute values; characters XML forbids become U+FFFD. */
export function escapeXml(text: string): string {
  return text.replace(XML_INVALID, '\uFFFD').replace(/[&<>"']/g, (c) => {
    switch (c) {
      case '&':
        return '&amp;';
      case '<':
        return '&lt;';
      case '>':
        return '&gt;';
      case '"':
        return '&quot;';
      default:
        return '&#39;';
    }
  });
}

/** A number for SVG attributes: at most 3 decimals, no trailing zeros. */
function num(n: number): string {
  return String(Number(n.toFixed(3)));
}

/** The QR symbol's modules for a label (the same symbol labelPng draws). */
export function labelQr(label: Pick<Label, 'deviceId' | 'claimCode'>): { size: number; dark: (row: number, col: number) => boolean } {
  const qr = QRCode.create(claimPayload(label.deviceId, label.claimCode), { errorCorrectionLevel: QR_ERROR_CORRECTION });
  const { size, data } = qr.modules;
  return { size, dark: (row, col) => data[row * size + col] === 1 };
}

/** SVG path of the dark modules, one rectangle per horizontal run, in module units (quiet zone included). */
function qrPath(size: number, dark: (row: number, col: number) => boolean): string {
  let d = '';
  for (let row = 0; row < size; row++) {
    let col = 0;
    while (col < size) {
      if (!dark(row, col)) {
        col++;
        continue;
      }
      const start = col;
      while (col < size && dark(row, col)) col++;
      const run = col - start;
      d += `M${start + QR_QUIET_ZONE} ${row + QR_QUIET_ZONE}h${run}v1h-${run}z`;
    }
  }
  return d;
}

/** Splits text into lines of at most `perLine` characters (code points, so no surrogate is cut). */
function chunk(text: string, perLine: number): string[] {
  const chars = Array.from(text);
  const lines: string[] = [];
  for (let i = 0; i < chars.length; i += perLine) lines.push(chars.slice(i, i + perLine).join(''));
  return lines.length ? lines : [''];
}

/** A <text> element; when the text would be wider than maxWidth it is squeezed with textLength. */
function textEl(
  x: number,
  y: number,
  text: string,
  attrs: { size: number; family: string; advance: number; maxWidth: number; weight?: string; fill?: string; anchor?: 'middle' },
): string {
  const width = Array.from(text).length * attrs.advance * attrs.size;
  const squeeze = width > attrs.maxWidth ? ` textLength="${num(attrs.maxWidth)}" lengthAdjust="spacingAndGlyphs"` : '';
  const weight = attrs.weight ? ` font-weight="${attrs.weight}"` : '';
  const anchor = attrs.anchor ? ` text-anchor="${attrs.anchor}"` : '';
  return (
    `<text x="${num(x)}" y="${num(y)}" font-family="${attrs.family}" font-size="${num(attrs.size)}"` +
    `${weight}${anchor} fill="${attrs.fill ?? '#000'}"${squeeze} xml:space="preserve">${escapeXml(text)}</text>`
  );
}

/**
 * A self-contained SVG label, 50 x 30 mm (user units are millimetres): the QR code on the left
 * (26 mm square including its quiet zone), model and device id on the right, and the grouped claim
 * code along the bottom in a monospace font. No ids, no external references: labels can be inlined
 * many times in one HTML page.
 */
export function labelSvg(label: Label): string {
  const { size, dark } = labelQr(label);
  const qrBox = 26;
  const module = qrBox / (size + 2 * QR_QUIET_ZONE);
  const colX = qrBox + 0.5;
  const colWidth = LABEL_WIDTH_MM - 0.5 - colX;

  const parts: string[] = [];
  parts.push(`<rect width="${LABEL_WIDTH_MM}" height="${LABEL_HEIGHT_MM}" fill="#fff"/>`);
  parts.push(
    `<path transform="scale(${Number(module.toFixed(5))})" fill="#000" shape-rendering="crispEdges" d="${qrPath(size, dark)}"/>`,
  );

  let y = 3.2;
  if (label.model) {
    parts.push(textEl(colX, y, label.model, { size: 2.6, family: SANS, advance: SANS_ADVANCE, maxWidth: colWidth, weight: 'bold' }));
    y += 3;
  }
  parts.push(textEl(colX, y, 'DEVICE ID', { size: 1.5, family: SANS, advance: SANS_ADVANCE, maxWidth: colWidth, fill: '#444' }));
  y += 0.6;

  // The device id wraps over as many lines as fit above the claim-code caption, in the largest
  // font that needs at most 3 lines; the last line is squeezed if the id is longer still.
  const idBottom = 22.8;
  const idLength = Array.from(label.deviceId).length;
  const sizes = [2.4, 2.2, 2, 1.8, 1.6, 1.4];
  let idSize = sizes[sizes.length - 1]!;
  for (const s of sizes) {
    if (Math.ceil(idLength / Math.floor(colWidth / (MONO_ADVANCE * s))) <= 3) {
      idSize = s;
      break;
    }
  }
  const perLine = Math.floor(colWidth / (MONO_ADVANCE * idSize));
  const lineHeight = idSize * 1.2;
  const maxLines = Math.max(1, Math.floor((idBottom - y) / lineHeight));
  let lines = chunk(label.deviceId, perLine);
  if (lines.length > maxLines) lines = [...lines.slice(0, maxLines - 1), lines.slice(maxLines - 1).join('')];
  for (const line of lines) {
    y += lineHeight;
    parts.push(textEl(colX, y, line, { size: idSize, family: MONO, advance: MONO_ADVANCE, maxWidth: colWidth }));
  }

  parts.push(textEl(colX, 24.6, 'CLAIM CODE', { size: 1.5, family: SANS, advance: SANS_ADVANCE, maxWidth: colWidth, fill: '#444' }));
  const code = canonicalClaimCode(label.claimCode) ?? label.claimCode;
  const codeWidth = LABEL_WIDTH_MM - 2;
  const codeSize = Math.max(1.4, Math.min(3.4, codeWidth / (MONO_ADVANCE * Math.max(1, Array.from(code).length))));
  parts.push(
    textEl(LABEL_WIDTH_MM / 2, 28.9, code, {
      size: codeSize,
      family: MONO,
      advance: MONO_ADVANCE,
      maxWidth: codeWidth,
      weight: 'bold',
      anchor: 'middle',
    }),
  );

  const title = `${label.model ? `${label.model} ` : ''}${label.deviceId} claim code ${code}`;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${LABEL_WIDTH_MM}mm" height="${LABEL_HEIGHT_MM}mm"` +
    ` viewBox="0 0 ${LABEL_WIDTH_MM} ${LABEL_HEIGHT_MM}" role="img">` +
    `<title>${escapeXml(title)}</title>${parts.join('')}</svg>`
  );
}

/**
 * A PNG of the label's QR code (no text), `scale` pixels per module (integer, default 8), with the
 * 4-module quiet zone; black on white.
 */
export async function labelPng(label: Label, opts: { scale?: number } = {}): Promise<Buffer> {
  const scale = opts.scale ?? 8;
  if (!Number.isInteger(scale) || scale < 1 || scale > 100) throw new RangeError('scale must be an integer from 1 to 100');
  return QRCode.toBuffer(claimPayload(label.deviceId, label.claimCode), {
    type: 'png',
    errorCorrectionLevel: QR_ERROR_CORRECTION,
    margin: QR_QUIET_ZONE,
    scale,
    color: { dark: '#000000ff', light: '#ffffffff' },
  });
}

/**
 * A printable A4 HTML page: labels in a grid of 3 x 8 per page (cut guides dashed), a page break
 * after every page but the last, the title and page number on each page. Print at 100 % scale.
 */
export function labelSheetHtml(labels: Label[], opts: { title?: string } = {}): string {
  const title = escapeXml(opts.title ?? 'Device labels');
  const pages: Label[][] = [];
  for (let i = 0; i < labels.length; i += LABELS_PER_PAGE) pages.push(labels.slice(i, i + LABELS_PER_PAGE));
  const body = pages
    .map((page, p) => {
      const cells = page
        .map((label) => `<div class="label" data-device-id="${escapeXml(label.deviceId)}">${labelSvg(label)}</div>`)
        .join('\n');
      return (
        `<section class="page">\n<header><span>${title}</span><span>Page ${p + 1} of ${pages.length}` +
        ` &#183; ${page.length} label${page.length === 1 ? '' : 's'}</span></header>\n<div class="grid">\n${cells}\n</div>\n</section>`
      );
    })
    .join('\n');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${title}</title>
<style>
@page { size: A4 portrait; margin: 10mm; }
* { box-sizing: border-box; }
html, body { margin: 0; padding: 0; }
body { font-family: ${SANS}; color: #000; }
.page { width: 190mm; break-after: page; page-break-after: always; }
.page:last-child { break-after: auto; page-break-after: auto; }
header { height: 8mm; display: flex; justify-content: space-between; align-items: center; font-size: 3mm; }
.grid { display: grid; grid-template-columns: repeat(${LABELS_PER_ROW}, ${LABEL_WIDTH_MM}mm); grid-auto-rows: ${LABEL_HEIGHT_MM}mm; column-gap: 10mm; row-gap: 3mm; }
.label { width: ${LABEL_WIDTH_MM}mm; height: ${LABEL_HEIGHT_MM}mm; outline: 0.1mm dashed #999; break-inside: avoid; page-break-inside: avoid; }
.label svg { display: block; width: ${LABEL_WIDTH_MM}mm; height: ${LABEL_HEIGHT_MM}mm; }
@media screen {
  body { background: #ddd; }
  .page { width: 210mm; min-height: 297mm; margin: 10mm auto; padding: 10mm; background: #fff; }
}
</style>
</head>
<body>
${body}
</body>
</html>
`;
}
