/**
 * Line charts as inline SVG strings: no script, no external resource, so a report opens anywhere
 * (also on a machine without network). Linear or log axes, nice ticks, gaps for missing values,
 * an optional right-hand axis, a legend.
 */

export interface Series {
  name: string;
  color: string;
  /** [x, y] points; y null (or absent on a log axis: <= 0) breaks the line. */
  points: ReadonlyArray<readonly [number, number | null]>;
  /** SVG stroke-dasharray, e.g. "5 3". */
  dash?: string;
  width?: number;
  /** Draw the area under the line, lightly. */
  fill?: boolean;
  /** Which y axis the series uses (default left). */
  axis?: 'left' | 'right';
  /** Draw as bars stacked on the other bar series of the chart (counts per x step of 1). */
  bar?: boolean;
}

export interface Tick {
  value: number;
  label: string;
}

export interface Axis {
  label: string;
  scale?: 'linear' | 'log';
  min?: number;
  max?: number;
  /** Fixed ticks instead of computed ones. */
  ticks?: Tick[];
  format?: (v: number) => string;
}

export interface ChartSpec {
  title: string;
  width?: number;
  height?: number;
  x: Axis;
  y: Axis;
  y2?: Axis;
  series: Series[];
  /** Vertical marker lines, e.g. where a phase starts. */
  markers?: Array<{ x: number; label: string }>;
}

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);
}

/** Round numbers covering `min` to `max` (the first at or below min, the last at or above max), about `count` steps. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (max <= min) max = min + 1;
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const first = Math.floor(min / step + 1e-9);
  const last = Math.ceil(max / step - 1e-9);
  const out: number[] = [];
  for (let k = first; k <= last; k++) out.push(Number((k * step).toPrecision(12)));
  return out;
}

/** Powers of ten (and 2, 5 between them when the range is short) from `min` to `max` (> 0). */
export function logTicks(min: number, max: number): number[] {
  const lo = Math.floor(Math.log10(min));
  const hi = Math.ceil(Math.log10(max));
  const mult = hi - lo <= 2 ? [1, 2, 5] : [1];
  const out: number[] = [];
  for (let e = lo; e <= hi; e++) for (const m of mult) out.push(Number((m * 10 ** e).toPrecision(12)));
  return out.filter((v) => v >= min * 0.999 && v <= max * 1.001);
}

/** 1234.5 -> "1,234.5"; small values keep their significant digits. */
export function formatNumber(v: number): string {
  if (v === 0) return '0';
  const abs = Math.abs(v);
  if (abs >= 100) return Math.round(v).toLocaleString('en-US');
  if (abs >= 10) return (Math.round(v * 10) / 10).toString();
  if (abs >= 1) return (Math.round(v * 100) / 100).toString();
  return Number(v.toPrecision(2)).toString();
}

interface Scale {
  map(v: number): number;
  ticks: Tick[];
  ok(v: number): boolean;
}

function scale(axis: Axis, values: number[], from: number, to: number): Scale {
  const format = axis.format ?? formatNumber;
  if (axis.scale === 'log') {
    const pos = values.filter((v) => v > 0);
    let min = axis.min ?? (pos.length ? Math.min(...pos) : 1);
    let max = axis.max ?? (pos.length ? Math.max(...pos) : 10);
    min = 10 ** Math.floor(Math.log10(min));
    max = 10 ** Math.ceil(Math.log10(max));
    if (max <= min) max = min * 10;
    const l0 = Math.log10(min);
    const l1 = Math.log10(max);
    return {
      map: (v) => from + ((Math.log10(v) - l0) / (l1 - l0)) * (to - from),
      ticks: axis.ticks ?? logTicks(min, max).map((v) => ({ value: v, label: format(v) })),
      ok: (v) => v > 0,
    };
  }
  const finite = values.filter(Number.isFinite);
  let min = axis.min ?? (finite.length ? Math.min(0, ...finite) : 0);
  let max = axis.max ?? (finite.length ? Math.max(...finite) : 1);
  if (max <= min) max = min + 1;
  // computed ticks end on round numbers at or beyond the data: the axis extends to them
  const computed = niceTicks(min, max, 5);
  if (axis.max === undefined && computed.length) max = computed.at(-1)!;
  if (axis.min === undefined && computed.length) min = computed[0]!;
  const ticks = axis.ticks ?? computed.filter((v) => v >= min && v <= max).map((v) => ({ value: v, label: format(v) }));
  return { map: (v) => from + ((v - min) / (max - min)) * (to - from), ticks, ok: Number.isFinite };
}

const f1 = (v: number) => (Math.round(v * 10) / 10).toString();

/** Per x, the sum of the stacked bar series. */
function stackTotals(bars: Series[]): Map<number, number> {
  const totals = new Map<number, number>();
  for (const s of bars) for (const [x, y] of s.points) if (y !== null && y > 0) totals.set(x, (totals.get(x) ?? 0) + y);
  return totals;
}

/** One chart as an <svg> element. */
export function lineChart(spec: ChartSpec): string {
  const width = spec.width ?? 760;
  const height = spec.height ?? 300;
  const left = 64;
  const right = 64; // the same with or without a right axis, so that charts over time line up
  // legend entries in rows under the title (widths estimated from the text)
  const legend: Array<{ s: Series; x: number; y: number }> = [];
  let lx = left;
  let ly = 36;
  for (const s of spec.series) {
    const w = 30 + s.name.length * 6.2;
    if (lx + w > width - right && lx > left) {
      lx = left;
      ly += 15;
    }
    legend.push({ s, x: lx, y: ly });
    lx += w;
  }
  const top = ly + 12;
  const bottom = 46;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const on = (axis: 'left' | 'right') => spec.series.filter((s) => (s.axis ?? 'left') === axis);
  const ys = (list: Series[]) => [
    ...list.filter((s) => !s.bar).flatMap((s) => s.points.map((p) => p[1]).filter((v): v is number => v !== null)),
    ...stackTotals(list.filter((s) => s.bar)).values(),
  ];
  const xScale = scale(spec.x, spec.series.flatMap((s) => s.points.map((p) => p[0])), left, left + plotW);
  const yScale = scale(spec.y, ys(on('left')), top + plotH, top);
  const y2Scale = spec.y2 ? scale(spec.y2, ys(on('right')), top + plotH, top) : undefined;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeXml(spec.title)}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="11">`,
    `<title>${escapeXml(spec.title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${left}" y="18" font-size="14" font-weight="600" fill="#222">${escapeXml(spec.title)}</text>`,
  );
  // grid and y ticks
  for (const t of yScale.ticks) {
    const y = f1(yScale.map(t.value));
    out.push(`<line x1="${left}" x2="${left + plotW}" y1="${y}" y2="${y}" stroke="#e6e6e6"/>`);
    out.push(`<text x="${left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#555">${escapeXml(t.label)}</text>`);
  }
  if (y2Scale) {
    for (const t of y2Scale.ticks) {
      const y = f1(y2Scale.map(t.value));
      out.push(`<text x="${left + plotW + 6}" y="${y}" dominant-baseline="middle" fill="#555">${escapeXml(t.label)}</text>`);
    }
  }
  for (const t of xScale.ticks) {
    const x = f1(xScale.map(t.value));
    out.push(`<line x1="${x}" x2="${x}" y1="${top}" y2="${top + plotH}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${x}" y="${top + plotH + 16}" text-anchor="middle" fill="#555">${escapeXml(t.label)}</text>`);
  }
  out.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`);
  for (const m of spec.markers ?? []) {
    if (!xScale.ok(m.x)) continue;
    const x = f1(xScale.map(m.x));
    out.push(`<line x1="${x}" x2="${x}" y1="${top}" y2="${top + plotH}" stroke="#777" stroke-dasharray="3 3"/>`);
    out.push(`<text x="${Number(x) + 4}" y="${top + 12}" fill="#555">${escapeXml(m.label)}</text>`);
  }
  // axis labels
  out.push(`<text x="${left + plotW / 2}" y="${height - 8}" text-anchor="middle" fill="#333">${escapeXml(spec.x.label)}</text>`);
  out.push(`<text transform="translate(14 ${top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#333">${escapeXml(spec.y.label)}</text>`);
  if (spec.y2) out.push(`<text transform="translate(${width - 10} ${top + plotH / 2}) rotate(90)" text-anchor="middle" fill="#333">${escapeXml(spec.y2.label)}</text>`);

  // stacked bars first, lines over them
  const bars = spec.series.filter((s) => s.bar);
  if (bars.length) {
    const ySc = bars[0]!.axis === 'right' && y2Scale ? y2Scale : yScale;
    // a bar for x covers [x, x + 1) (a bucket of one second), inside the plot
    const gap = Math.min(1, (xScale.map(1) - xScale.map(0)) * 0.1);
    const base = new Map<number, number>();
    for (const s of bars) {
      for (const [x, y] of s.points) {
        if (y === null || y <= 0) continue;
        const x0 = Math.max(left, xScale.map(x) + gap);
        const x1 = Math.min(left + plotW, xScale.map(x + 1) - gap);
        if (x1 <= x0) continue;
        const b = base.get(x) ?? 0;
        const y0 = ySc.map(b);
        const y1 = ySc.map(b + y);
        out.push(`<rect x="${f1(x0)}" y="${f1(y1)}" width="${f1(Math.max(1, x1 - x0))}" height="${f1(y0 - y1)}" fill="${s.color}"><title>${escapeXml(`${s.name}: ${y} at ${x}`)}</title></rect>`);
        base.set(x, b + y);
      }
    }
  }
  out.push(`<g>`);
  for (const s of spec.series.filter((x) => !x.bar)) {
    const ySc = s.axis === 'right' && y2Scale ? y2Scale : yScale;
    const segments: string[][] = [[]];
    for (const [x, y] of s.points) {
      if (y === null || !ySc.ok(y) || !xScale.ok(x)) {
        if (segments.at(-1)!.length) segments.push([]);
        continue;
      }
      segments.at(-1)!.push(`${f1(xScale.map(x))},${f1(ySc.map(y))}`);
    }
    const stroke = `stroke="${s.color}" stroke-width="${s.width ?? 1.6}" fill="none" stroke-linejoin="round"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}`;
    for (const seg of segments.filter((g) => g.length)) {
      if (s.fill && seg.length > 1) {
        const base = f1(ySc.map(Math.max(0, ySc.ticks[0]?.value ?? 0)));
        const first = seg[0]!.split(',')[0];
        const last = seg.at(-1)!.split(',')[0];
        out.push(`<path d="M${first},${base} L${seg.join(' L')} L${last},${base} Z" fill="${s.color}" fill-opacity="0.12" stroke="none"/>`);
      }
      if (seg.length === 1) {
        const [x, y] = seg[0]!.split(',');
        out.push(`<circle cx="${x}" cy="${y}" r="2" fill="${s.color}"><title>${escapeXml(s.name)}</title></circle>`);
      } else {
        out.push(`<path class="series" d="M${seg.join(' L')}" ${stroke}><title>${escapeXml(s.name)}</title></path>`);
      }
    }
  }
  out.push(`</g>`);

  for (const { s, x, y } of legend) {
    if (s.bar) {
      out.push(`<rect x="${x + 3}" y="${y - 9}" width="12" height="9" fill="${s.color}"/>`, `<text x="${x + 22}" y="${y}" fill="#333">${escapeXml(s.name)}</text>`);
      continue;
    }
    out.push(
      `<line x1="${x}" x2="${x + 18}" y1="${y - 4}" y2="${y - 4}" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`,
      `<text x="${x + 22}" y="${y}" fill="#333">${escapeXml(s.name)}</text>`,
    );
  }
  out.push('</svg>');
  return out.join('\n');
}
