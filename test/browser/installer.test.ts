/**
 * The installer page (/install) on a phone-sized Chromium (390x844, touch): sign in with an
 * installer key, paste a label's QR text, claim, and watch a simulated device provision live.
 * The device gets its bootstrap as the protocol says: from the claim response (read here off the
 * page's own POST /v1/claims), handed to the device.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import type { ClaimResponse } from '../../schemas/types.js';
import { claimPayload, generateClaimCode } from '../../src/factory/claim-codes.js';
import { labelPng } from '../../src/factory/labels.js';
import { launchBrowser, type TestBrowser } from '../helpers/browser.js';
import { claim, register } from '../helpers/device.js';
import { decodeQrPng } from '../helpers/qr.js';
import { startTestService, type TestService } from '../helpers/service.js';

const IMAGES = join(import.meta.dirname, '../../docs/images');

let ts: TestService;
let browser: TestBrowser;
beforeAll(async () => {
  [ts, browser] = await Promise.all([startTestService(), launchBrowser()]);
});
afterAll(async () => {
  await browser?.close();
  await ts?.stop();
});

async function noHorizontalScroll(page: Page): Promise<void> {
  const { scroll, client } = (await page.evaluate('({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth })')) as { scroll: number; client: number };
  expect(scroll).toBeLessThanOrEqual(client);
}

describe('installer page', () => {
  it('signs in, claims by the label QR text and shows the device provisioned live', async () => {
    const claimCode = generateClaimCode();
    const { id } = await register(ts, { claimCode });
    const qrText = decodeQrPng(await labelPng({ deviceId: id, claimCode }));
    expect(qrText).toBe(claimPayload(id, claimCode));

    const { page, problems } = await browser.page({ width: 390, height: 844 }, { isMobile: true, hasTouch: true });
    const urls: string[] = [];
    page.on('request', (r) => urls.push(r.url()));
    const base = `http://127.0.0.1:${ts.running.httpPort}`;

    const html = await page.goto(`${base}/install`);
    expect(html?.headers()['content-security-policy']).toContain("script-src 'self'");
    await expect(page.locator('#signin-view').isVisible()).resolves.toBe(true);
    await noHorizontalScroll(page);

    // a wrong key is refused in plain words
    await page.fill('#api-key', 'pk_not-a-real-key');
    await page.tap('#signin-button');
    await page.locator('#error-code', { hasText: 'AUTH_INVALID' }).waitFor();
    expect(await page.textContent('#error-text')).toContain('was not accepted');

    await page.fill('#api-key', ts.keys.installer);
    await page.tap('#signin-button');
    await page.locator('#claim-view').waitFor();
    expect(await page.locator('#error').isHidden()).toBe(true);
    await noHorizontalScroll(page);

    // a wrong code: the plain-language sentence, the code in small print
    await page.fill('#claim-code', 'ABCD-EFGH-JKMN-PQRS');
    await page.fill('#owner', 'Alice Smith');
    await page.fill('#site', '12 Elm Street');
    await page.tap('#claim-button');
    await page.locator('#error-code', { hasText: 'CLAIM_CODE_INVALID' }).waitFor();
    expect(await page.textContent('#error-text')).toContain('does not match a device waiting to be installed');

    // too many wrong codes: the wait time is in the sentence; network down has its own sentence
    await page.route('**/v1/claims', (route) =>
      route.fulfill({
        status: 429,
        contentType: 'application/json',
        headers: { 'retry-after': '120' },
        body: JSON.stringify({ statusCode: 429, code: 'CLAIM_RATE_LIMITED', error: 'Too Many Requests', message: 'too many wrong codes', retryAfterSeconds: 120 }),
      }),
    );
    await page.tap('#claim-button');
    await page.locator('#error-code', { hasText: 'CLAIM_RATE_LIMITED' }).waitFor();
    expect(await page.textContent('#error-text')).toContain('wait 2 minutes');
    await page.unroute('**/v1/claims');
    await page.route('**/v1/claims', (route) => route.abort('internetdisconnected'));
    await page.tap('#claim-button');
    await page.locator('#error-code', { hasText: 'NETWORK_DOWN' }).waitFor();
    expect(await page.textContent('#error-text')).toContain('Cannot reach the service');
    await page.unroute('**/v1/claims');

    // typed codes and web addresses are read like the service reads them: no spaces, dashes or case
    await page.fill('#claim-code', ' abcd efgh-jkmn\tpqrs ');
    expect(await page.textContent('#code-hint')).toBe('Code ABCDEFGHJKMNPQRS');
    await page.fill('#claim-code', 'https://example.com/claim?d=dev-x1&c=abcd-efgh');
    expect(await page.textContent('#code-hint')).toBe('Code ABCDEFGH for device dev-x1');

    // the label's QR text, pasted; customer and site kept; Wi-Fi settings for the device
    await page.fill('#claim-code', qrText!);
    expect(await page.textContent('#code-hint')).toContain(`for device ${id}`);
    await page.tap('#wifi summary');
    await page.fill('#ssid', 'Site-WiFi');
    await page.fill('#wifi-secret', 'correct horse battery');
    await noHorizontalScroll(page);
    mkdirSync(IMAGES, { recursive: true });
    await page.screenshot({ path: join(IMAGES, 'installer-claim.png'), fullPage: true });

    const claimed = page.waitForResponse((r) => r.url().endsWith('/v1/claims') && r.request().method() === 'POST');
    await page.tap('#claim-button');
    const response = await claimed;
    expect(response.status()).toBe(201);
    const sent = response.request().postDataJSON() as Record<string, unknown>;
    expect(sent).toMatchObject({ claimCode: claimCode.replace(/-/g, ''), deviceId: id, owner: 'Alice Smith', site: '12 Elm Street', network: { wifi: { ssid: 'Site-WiFi', security: 'wpa2-psk' } } });
    const { bootstrap } = (await response.json()) as ClaimResponse;
    await page.locator('#progress-view').waitFor();
    await page.locator('#steps li[data-step="claimed"].done').waitFor();
    await page.locator('#live', { hasText: 'Live updates on' }).waitFor();

    // the device, handed its bootstrap, provisions; the page follows over the event stream
    const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap: bootstrap! });
    try {
      await device.run();
      const ranAt = Date.now();
      await page.locator('#steps[data-state="provisioned"]').waitFor({ timeout: 5000 });
      // the stream, not the (10 s, while live) poll, brought the news
      expect(Date.now() - ranAt).toBeLessThan(5000);
    } finally {
      await device.stop();
    }
    expect(await page.locator('#steps li.done').count()).toBe(4);
    expect(await page.textContent('#status')).toContain('Provisioned');
    expect(urls.some((u) => u.includes(`/v1/devices/${id}/events`))).toBe(true);
    await noHorizontalScroll(page);
    await page.screenshot({ path: join(IMAGES, 'installer-provisioned.png'), fullPage: true });

    // the key: only in this tab's sessionStorage, never in a URL or in localStorage
    expect(urls.filter((u) => u.includes(ts.keys.installer))).toEqual([]);
    const stored = (await page.evaluate('({ session: Object.values(sessionStorage), local: JSON.stringify(localStorage) })')) as { session: string[]; local: string };
    expect(stored.session).toContain(ts.keys.installer);
    expect(stored.local).not.toContain(ts.keys.installer);
    expect(stored.local).toContain('12 Elm Street'); // the last site, remembered

    // no console errors but the refusals this test provoked (Chromium logs every failed load)
    expect([...problems].sort()).toEqual([
      'console: Failed to load resource: the server responded with a status of 401 (Unauthorized)',
      'console: Failed to load resource: the server responded with a status of 403 (Forbidden)',
      'console: Failed to load resource: the server responded with a status of 429 (Too Many Requests)',
      `request failed: ${base}/v1/claims net::ERR_INTERNET_DISCONNECTED`,
      'console: Failed to load resource: net::ERR_INTERNET_DISCONNECTED',
    ].sort());
  });

  it("streams one device's events to whoever may read it, with the key in the header only", async () => {
    const a = await register(ts);
    const b = await register(ts);
    const noKey = await ts.running.api.inject({ url: `/v1/devices/${a.id}/events` });
    expect(noKey.json()).toMatchObject({ code: 'AUTH_REQUIRED' });
    const unknown = await ts.running.api.inject({ url: '/v1/devices/dev-nosuch/events', headers: { authorization: `Bearer ${ts.keys.installer}` } });
    expect(unknown.json()).toMatchObject({ code: 'DEVICE_NOT_FOUND' });
    const other = await ts.tenant('installer-other');
    const foreign = await ts.running.api.inject({ url: `/v1/devices/${a.id}/events`, headers: { authorization: `Bearer ${other.installer}` } });
    expect(foreign.json()).toMatchObject({ code: 'DEVICE_NOT_FOUND' });

    const abort = new AbortController();
    const res = await fetch(`http://127.0.0.1:${ts.running.httpPort}/v1/devices/${a.id}/events`, { headers: { authorization: `Bearer ${ts.keys.installer}` }, signal: abort.signal });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    while (!text.includes(': connected')) text += (await reader.read()).value ?? '';
    expect((await claim(ts, b.claimCode)).statusCode).toBe(201);
    expect((await claim(ts, a.claimCode)).statusCode).toBe(201);
    while (!text.includes('event: device.claimed')) text += (await reader.read()).value ?? '';
    abort.abort();
    expect(text).toContain(a.id);
    expect(text).not.toContain(b.id);
  });
});
