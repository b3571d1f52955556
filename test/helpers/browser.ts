/**
 * Headless Chromium for browser tests: Debian's /usr/bin/chromium (CHROMIUM_PATH to override)
 * driven by playwright-core, which downloads no browser. `.ci/run` installs chromium when missing.
 * Console errors and failed requests of every page are collected so a test can assert there were none.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export interface TestBrowser {
  browser: Browser;
  /** A fresh context (cookies, storage) with a page of the given viewport. */
  page(viewport?: { width: number; height: number }, options?: { isMobile?: boolean; hasTouch?: boolean; deviceScaleFactor?: number }): Promise<{ context: BrowserContext; page: Page; problems: string[] }>;
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    browser,
    async page(viewport = { width: 1280, height: 900 }, options = {}) {
      const context = await browser.newContext({ viewport, deviceScaleFactor: 1, ...options });
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('requestfailed', (r) => {
        // an EventSource closed by navigation or by the test's end is not a problem
        if (r.failure()?.errorText !== 'net::ERR_ABORTED') problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
      });
      return { context, page, problems };
    },
    close: () => browser.close(),
  };
}
