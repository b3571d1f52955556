/**
 * A PNG of an HTML report (the fleet runner's), taken with headless Chromium through playwright-core.
 *
 *   npm run report:screenshot -- <report.html> <out.png> [--width 1100] [--chromium /usr/bin/chromium]
 *
 * Needs a Chromium binary (Debian: apt-get install chromium); playwright-core downloads none.
 * The page is opened from the file system with the network blocked: a self-contained report
 * renders completely, anything it tried to fetch would be missing from the picture.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { width: { type: 'string', default: '1100' }, chromium: { type: 'string', default: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium' } },
});
const [html, png] = positionals;
if (!html || !png) {
  console.error('usage: npm run report:screenshot -- <report.html> <out.png> [--width PX] [--chromium PATH]');
  process.exit(2);
}
if (!existsSync(values.chromium)) {
  console.error(`no Chromium at ${values.chromium} (Debian: apt-get install chromium; or --chromium PATH)`);
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: values.chromium,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: Number(values.width), height: 900 }, deviceScaleFactor: 1 });
  const blocked: string[] = [];
  await page.route(/^(?!file:|data:)/, async (route) => {
    blocked.push(route.request().url());
    await route.abort();
  });
  await page.goto(pathToFileURL(resolve(html)).href, { waitUntil: 'load' });
  await page.screenshot({ path: png, fullPage: true });
  if (blocked.length) console.error(`the report tried to fetch ${blocked.length} resource(s), blocked: ${blocked.slice(0, 5).join(', ')}`);
  console.log(`${png} written`);
} finally {
  await browser.close();
}
