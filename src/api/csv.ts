/** RFC 4180 CSV reading for uploads: quoted fields, doubled quotes, CRLF or LF line ends. */
import { ProvisioningError } from '../provisioning/index.js';

export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; // a UTF-8 byte order mark from spreadsheets
  for (; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else field += c;
    } else if (c === '"') {
      if (field.length > 0) throw new ProvisioningError('INVALID_CSV', `line ${rows.length + 1}: a quote inside an unquoted field`);
      quoted = true;
    } else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (quoted) throw new ProvisioningError('INVALID_CSV', 'a quoted field is not closed');
  if (field.length > 0 || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((r) => !(r.length === 1 && r[0]!.trim() === ''));
}

/** Rows of objects keyed by the header line; `allowed` lists the columns that may appear. */
export function csvRecords(text: string, required: readonly string[], optional: readonly string[]): Record<string, string>[] {
  const [header, ...rows] = parseCsv(text);
  if (!header) throw new ProvisioningError('INVALID_CSV', 'the file is empty: a header line is needed');
  const columns = header.map((h) => h.trim());
  for (const col of columns) {
    if (!required.includes(col) && !optional.includes(col)) throw new ProvisioningError('INVALID_CSV', `unknown column "${col}"; columns are ${[...required, ...optional].join(', ')}`);
  }
  for (const col of required) if (!columns.includes(col)) throw new ProvisioningError('INVALID_CSV', `the header lacks the column "${col}"`);
  return rows.map((cells) => {
    const rec: Record<string, string> = {};
    columns.forEach((col, k) => {
      const v = cells[k]?.trim();
      if (v !== undefined && v !== '') rec[col] = v;
    });
    if (cells.length > columns.length) rec['(extra)'] = cells.slice(columns.length).join(',');
    return rec;
  });
}
