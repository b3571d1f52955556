/**
 * The operator dashboard (/dashboard) in Debian's Chromium at 1280x900: sign in with a key, watch
 * the funnel move live (SSE) while a simulated fleet provisions against the same service, open the
 * device that never acknowledged (stalled once its profile deadline passed), release it from its
 * page. Then the session rules through plain HTTP, and a 10,000-device tenant that must still answer
 * fast. Screenshots: docs/images/dashboard-funnel.png, docs/images/dashboard-device.png.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFleet } from '../../firmware-sim/fleet.js';
import type { DeviceRecord } from '../../src/store/index.js';
import { DashboardSessions } from '../../src/provisioning/dashboard.js';
import { launchBrowser, type TestBrowser } from '../helpers/browser.js';
import { ManualClock } from '../helpers/clock.js';
import { makeDevice } from '../helpers/records.js';
import { startTestService, type TenantKeys, type TestService } from '../helpers/service.js';

const IMAGES = join(import.meta.dirname, '../../docs/images');
const auth = (key: string) => ({ authorization: `Bearer ${key}` });
/** Waits until the element's whole text is `text` (the page updates it by itself); a locator, since the page's CSP forbids eval. */
const textIs = (page: Page, selector: string, text: string, timeout = 10_000) =>
  page.locator(selector, { hasText: new RegExp(`^${text}$`) }).waitFor({ timeout });

let clock: ManualClock;
let ts: TestService;
let keys: TenantKeys;
let browser: TestBrowser;
let base: string;

beforeAll(async () => {
  clock = new ManualClock(new Date(Date.now() - 3_600_000)); // the fleet is installed an hour ago
  [ts, browser] = await Promise.all([startTestService({}, { clock }), launchBrowser()]);
  keys = await ts.tenant('plant');
  base = `http://127.0.0.1:${ts.running.httpPort}`;
  const profile = await ts.running.api.inject({
    method: 'PUT',
    url: '/v1/profiles/sensors',
    headers: auth(keys.admin),
    payload: {
      name: 'Plant sensors',
      defaultForModels: ['thermostat', 'camera'],
      deadlineSeconds: 1800,
      items: [
        { id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} },
        { id: 'telemetry', type: 'telemetry', required: true, priority: 20, await: false, data: { intervalSeconds: 60 } },
      ],
    },
  });
  expect(profile.statusCode).toBe(200);
  mkdirSync(IMAGES, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
  await ts?.stop();
});

describe('dashboard', () => {
  it('signs in, follows a fleet live, opens the stalled device and releases it', async () => {
    const { page, problems } = await browser.page({ width: 1280, height: 900 });
    const html = await page.goto(`${base}/dashboard`);
    expect(html?.headers()['content-security-policy']).toContain("script-src 'self'");
    await page.locator('#signin').waitFor();

    // a wrong key: plain words, no session
    await page.fill('#apikey', 'pdk_0000000000000000_' + 'x'.repeat(43));
    await page.click('#signin-form button[type=submit]');
    await page.locator('#message', { hasText: 'not valid' }).waitFor();
    // the refused sign-in is the one failed request Chromium reports; nothing else may fail
    expect(problems).toEqual(['console: Failed to load resource: the server responded with a status of 401 (Unauthorized)']);
    problems.length = 0;

    await page.fill('#apikey', keys.admin);
    await page.click('#signin-form button[type=submit]');
    await page.locator('#overview').waitFor();
    expect(await page.inputValue('#apikey')).toBe(''); // the key is not kept in the page
    expect(await page.textContent('#who')).toContain('plant');
    const cookies = await page.context().cookies();
    expect(cookies.find((c) => c.name === 'pd_session')).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    await textIs(page, '#total', '0');
    await page.evaluate(() => void ((globalThis as Record<string, unknown>).notReloaded = true));

    // the fleet provisions while the page watches: the numbers move without a reload
    const fleet = runFleet({ apiUrl: base, factoryKey: keys.factory, installerKey: keys.installer, devices: 8, concurrency: 8, neverAckFraction: 0.125, seed: 7, site: 'hall-a', models: ['thermostat', 'camera'] });
    await textIs(page, '#total', '8', 20_000);
    const ran = await fleet;
    expect(ran.report.neverAck).toBe(1);
    await textIs(page, '#provisioned', '7', 20_000);
    expect(await page.evaluate(() => (globalThis as Record<string, unknown>).notReloaded)).toBe(true);

    // the never-acknowledging device passes its deadline (claimed an hour ago, 30 minutes allowed)
    clock.set(new Date());
    const { stalled } = await ts.running.lifecycle.scanStalls();
    expect(stalled).toHaveLength(1);
    const stalledId = stalled[0]!;
    await textIs(page, '#stalled-count', '1', 10_000);
    const row = page.locator(`#stalled-rows tr[data-device="${stalledId}"]`);
    await row.waitFor();
    expect(await row.locator('td.missing').textContent()).toContain('telemetry');
    expect(await page.locator('#funnel li[data-stage=provisioned] .count').textContent()).toBe('7');
    expect(await page.locator('#ttp-count').textContent()).toBe('7');
    await page.screenshot({ path: join(IMAGES, 'dashboard-funnel.png') });
    // the same funnel for one site (and one profile)
    await page.selectOption('#group-by', 'site');
    expect(await page.locator('#group-key').inputValue()).toBe('hall-a');
    expect(await page.locator('#funnel li[data-stage=provisioned] .count').textContent()).toBe('7');
    await page.selectOption('#group-by', 'profile');
    expect(await page.locator('#group-key').inputValue()).toBe('sensors');

    // the stalled device's page: timeline, missing items, certificate; release it
    await row.locator('a').click();
    await page.locator('#device-state[data-state=stalled]').waitFor();
    expect(await page.locator('#timeline').textContent()).toMatch(/claimed[\s\S]*identity issued[\s\S]*stalled/);
    expect(await page.locator('#config-items').textContent()).toContain('pending');
    expect(await page.locator('#certificates').textContent()).not.toContain('No certificate issued yet');
    await page.screenshot({ path: join(IMAGES, 'dashboard-device.png') });
    await page.click('#actions button[data-action=release]');
    await page.locator('#confirm').waitFor();
    await page.fill('#confirm-reason', 'wrong room; reinstall');
    await page.click('#confirm-ok');
    await page.locator('#device-state[data-state=released]').waitFor();
    expect(await page.locator('#timeline').textContent()).toContain('wrong room; reinstall');
    expect((await ts.running.store.getDevice(stalledId))?.state).toBe('released');

    // sign out ends the session
    await page.click('#logout');
    await page.locator('#signin').waitFor();
    expect(problems).toEqual([]);
  });

  it('keeps the key out of the page: session cookie, CSRF token, roles, logout', async () => {
    const inject = ts.running.api.inject.bind(ts.running.api);
    expect((await inject({ method: 'POST', url: '/dashboard/api/session', payload: { apiKey: keys.factory } })).json()).toMatchObject({ code: 'ROLE_FORBIDDEN' });
    expect((await inject({ url: '/dashboard/api/overview', headers: auth(keys.admin) })).json()).toMatchObject({ code: 'SESSION_REQUIRED' });

    const signIn = await inject({ method: 'POST', url: '/dashboard/api/session', payload: { apiKey: keys.viewer } });
    expect(signIn.statusCode).toBe(201);
    const setCookie = String(signIn.headers['set-cookie']);
    expect(setCookie).toMatch(/^pd_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
    expect(signIn.body).not.toContain(keys.viewer);
    const cookie = setCookie.split(';')[0]!;
    const { csrfToken, role } = signIn.json() as { csrfToken: string; role: string };
    expect(role).toBe('viewer');

    const overview = await inject({ url: '/dashboard/api/overview', headers: { cookie } });
    expect(overview.statusCode).toBe(200);
    expect(overview.json()).toMatchObject({ tenantId: 'plant', all: { total: 7 } }); // the released one left the funnel

    const [device] = (await inject({ url: '/v1/devices?limit=1', headers: auth(keys.viewer) })).json().items as { id: string }[];
    const url = `/dashboard/api/devices/${device!.id}/revoke`;
    expect((await inject({ method: 'POST', url, headers: { cookie }, payload: {} })).json()).toMatchObject({ code: 'CSRF_TOKEN_INVALID' });
    expect((await inject({ method: 'POST', url, headers: { cookie, 'x-csrf-token': csrfToken }, payload: {} })).json()).toMatchObject({ code: 'ROLE_FORBIDDEN' });
    expect((await inject({ url: '/dashboard/api/devices/not-ours', headers: { cookie } })).statusCode).toBe(404);

    // behind a proxy that says https, the cookie is Secure
    const viaProxy = await inject({ method: 'POST', url: '/dashboard/api/session', headers: { 'x-forwarded-proto': 'https' }, payload: { apiKey: keys.viewer } });
    expect(String(viaProxy.headers['set-cookie'])).toContain('; Secure');

    expect((await inject({ method: 'DELETE', url: '/dashboard/api/session', headers: { cookie } })).json()).toMatchObject({ code: 'CSRF_TOKEN_INVALID' });
    expect((await inject({ method: 'DELETE', url: '/dashboard/api/session', headers: { cookie, 'x-csrf-token': csrfToken } })).statusCode).toBe(204);
    expect((await inject({ url: '/dashboard/api/overview', headers: { cookie } })).json()).toMatchObject({ code: 'SESSION_REQUIRED' });

    // sessions expire when idle (a pinned clock of their own), and end with their API key
    const own = new ManualClock();
    const sessions = new DashboardSessions(ts.running.apiKeys, ts.running.store, own, { ttlSeconds: 60 });
    const s1 = await sessions.signIn(keys.viewer);
    own.advance(59_000);
    expect(await sessions.get(s1.id)).toBeDefined(); // (and extended by that use)
    own.advance(59_000);
    expect(await sessions.get(s1.id)).toBeDefined();
    own.advance(61_000);
    expect(await sessions.get(s1.id)).toBeUndefined();
    const temp = await ts.running.apiKeys.create('plant', 'short-lived viewer', 'viewer');
    const s2 = await sessions.signIn(temp.secret);
    await ts.running.apiKeys.delete('plant', temp.id);
    expect(await sessions.get(s2.id)).toBeUndefined();
  });

  it('answers fast for a tenant of 10,000 devices', async () => {
    const big = await ts.tenant('big');
    const now = Date.now();
    const iso = (ms: number) => new Date(ms).toISOString();
    const states = ['registered', 'claimed', 'identity_issued', 'configuring', 'provisioned', 'provisioned', 'provisioned', 'stalled'] as const;
    const devices: DeviceRecord[] = Array.from({ length: 10_000 }, (_, i) => {
      const state = states[i % states.length]!;
      const claimedAt = iso(now - 86_400_000 + i * 1000);
      const d = makeDevice({ id: `big-${String(i).padStart(5, '0')}`, tenantId: 'big', state, site: `site-${i % 12}`, profileId: `profile-${i % 3}`, profileVersion: 1 });
      if (state !== 'registered') Object.assign(d, { claimedAt, owner: 'Big Co' });
      if (state === 'provisioned') Object.assign(d, { provisionedAt: iso(Date.parse(claimedAt) + (i % 97) * 7_000), certificateSerial: `0${i}`.padStart(8, '1') });
      if (state === 'stalled') Object.assign(d, { stalledAt: iso(Date.parse(claimedAt) + 1_800_000), deadlineAt: iso(Date.parse(claimedAt) + 1_800_000) });
      return d;
    });
    for (let i = 0; i < devices.length; i += 2000) await ts.running.store.insertDevices(devices.slice(i, i + 2000), []);

    const { page, problems } = await browser.page({ width: 1280, height: 900 });
    await page.goto(`${base}/dashboard`);
    await page.fill('#apikey', big.viewer);
    const timed = async (path: string) => {
      const t0 = performance.now();
      const res = await page.evaluate(async (p) => (await fetch(p)).status, path);
      return { status: res, ms: performance.now() - t0 };
    };
    const t0 = performance.now();
    await page.click('#signin-form button[type=submit]');
    await textIs(page, '#total', '10000', 10_000);
    await page.locator('#stalled-rows tr[data-device]').first().waitFor();
    const firstLoadMs = performance.now() - t0;
    expect(await page.locator('#provisioned').textContent()).toBe('3750');
    expect(await page.locator('#stalled-count').textContent()).toBe('1250');
    expect(await page.locator('#stalled-rows tr').count()).toBe(25);
    await page.click('#stalled-next');
    await page.locator('#stalled-page', { hasText: 'page 2' }).waitFor();

    const overview = await timed('/dashboard/api/overview');
    const stalledPage = await timed('/dashboard/api/stalled?limit=25&after=big-05000');
    expect(overview.status).toBe(200);
    expect(stalledPage.status).toBe(200);
    // the aggregation itself, uncached (server time)
    const computed = await ts.running.api.inject({ url: '/dashboard/api/overview', headers: { cookie: (await page.context().cookies()).map((c) => `${c.name}=${c.value}`).join('; ') } });
    const { computeMs } = computed.json() as { computeMs: number };
    console.log(`10,000 devices: first load ${Math.round(firstLoadMs)} ms, overview aggregation ${computeMs} ms, overview ${Math.round(overview.ms)} ms, stalled page ${Math.round(stalledPage.ms)} ms`);
    expect(computeMs).toBeLessThan(1000);
    expect(stalledPage.ms).toBeLessThan(1000);
    expect(firstLoadMs).toBeLessThan(5000);
    expect(problems).toEqual([]);
  });
});
