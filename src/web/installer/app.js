// The installer page: sign in with an installer API key, claim a device by its label, watch it
// provision. Plain JS, no build step. Served by provisiond at /install (src/api/routes/installer.ts).
//
// The API key is kept in sessionStorage (this tab only; gone when the tab closes) and sent only as
// an Authorization header, never in a URL. Live progress comes from GET /v1/devices/:id/events read
// with fetch() (EventSource cannot send the header); GET /v1/devices/:id is polled as a fallback.

const KEY_STORE = 'provisiond.installer.key';
const RECENT_STORE = 'provisiond.installer.recent';
const STEPS = ['claimed', 'identity', 'configuring', 'provisioned'];
/** How far along each device state is, in STEPS (index of the last step done). */
const STATE_STEP = { registered: -1, claimed: 0, identity_issued: 1, configuring: 2, provisioned: 3 };
const EVENT_STATE = { 'device.claimed': 'claimed', 'device.identity_issued': 'identity_issued', 'device.provisioned': 'provisioned', 'device.failed': 'failed', 'device.stalled': 'stalled' };

/** Plain-language sentences per error code; {wait} is replaced by the retry time. */
const MESSAGES = {
  CLAIM_CODE_INVALID: 'This code does not match a device waiting to be installed. Check the code on the label (or scan it again) and try once more.',
  CLAIM_CODE_TOO_SHORT: 'This code is too short. A claim code has at least 8 letters or digits: check the label.',
  DEVICE_ALREADY_CLAIMED: 'This device has already been claimed. If it belongs to this job, ask your office to release it first.',
  CLAIM_RATE_LIMITED: 'Too many wrong codes were tried. Please wait {wait} before trying again.',
  RATE_LIMITED: 'Too many requests in a short time. Please wait {wait} and try again.',
  AUTH_INVALID: 'Your installer key was not accepted. Sign out and sign in again with the key your office gave you.',
  AUTH_REQUIRED: 'Please sign in with your installer key.',
  ROLE_FORBIDDEN: 'This key is not allowed to claim devices. Ask your office for an installer key.',
  NETWORK_SECRET_REQUIRED: 'Enter the Wi-Fi password, or choose “Open (no password)” if the network has none.',
  INVALID_BODY: 'Some details are not in the right form. Check customer and site (up to 128 characters), the Wi-Fi name (up to 32) and the Wi-Fi password (8 to 63 characters).',
  SCHEMA_INVALID: 'Some details are not in the right form. Check customer and site (up to 128 characters), the Wi-Fi name (up to 32) and the Wi-Fi password (8 to 63 characters).',
  PAYLOAD_TOO_LARGE: 'What was entered is too long. Check the code and the other fields.',
  DEVICE_NOT_FOUND: 'This device is not known to the service. Check the label, or ask your office whether it was registered.',
  DEVICE_STATE_INVALID: 'This device cannot be claimed in its current state. Ask your office to check it.',
  PROFILE_NOT_FOUND: 'The chosen device profile no longer exists. Pick another one or leave the default.',
  SERVICE_STOPPING: 'The service is restarting. Please wait {wait} and try again.',
  ISSUANCE_CONFLICT: 'The service is busy with this device. Please wait {wait} and try again.',
  STORE_UNAVAILABLE: 'The service is having trouble right now. Please wait {wait} and try again.',
  NOT_FOUND: 'The service did not recognise this request. Reload the page; if it keeps happening, tell your office.',
  NETWORK_DOWN: 'Cannot reach the service. Check the phone’s internet connection (mobile data or Wi-Fi) and try again.',
  CODE_EMPTY: 'Enter the claim code from the label, or paste the text of its QR code.',
  KEY_EMPTY: 'Enter your installer key.',
  FIELDS_MISSING: 'Enter the customer and the site.',
  WIFI_INCOMPLETE: 'Enter the Wi-Fi network name, or close the Wi-Fi settings if the device does not need them.',
  DEVICE_STALLED: 'The device has stopped making progress. Check that it is powered and has network, then wait a minute; if nothing changes, tell your office.',
  DEVICE_FAILED: 'The device could not apply its settings (for example a wrong Wi-Fi password). Tell your office; they can see the details.',
};
const GENERIC = 'Something went wrong. Try again; if it keeps happening, tell your office and quote the code below.';

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(code, message, retryAfterSeconds) {
    super(message);
    this.code = code;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

// ---- the label: what its QR code says, or the code typed by hand ----

/** Like the service: spaces and dashes dropped, upper case. */
export function normalizeCode(code) {
  return code.replace(/[\s-]+/g, '').toUpperCase();
}

/**
 * Reads what was typed or pasted: the label QR text `provisiond:claim?d=<id>&c=<code>`, a web
 * address carrying `c=`/`code=` (and `d=`/`device=`), or the code alone.
 * Returns { claimCode, deviceId? } or undefined when there is nothing to use.
 */
export function parseLabelText(text) {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  let params;
  if (/^provisiond:claim\?/i.test(trimmed)) params = new URLSearchParams(trimmed.slice(trimmed.indexOf('?') + 1));
  else if (/^https?:\/\//i.test(trimmed)) {
    try {
      const url = new URL(trimmed);
      params = new URLSearchParams(url.search || url.hash.replace(/^#\??/, ''));
    } catch {
      return undefined;
    }
  }
  if (params) {
    const code = params.get('c') ?? params.get('code');
    if (!code) return undefined;
    const deviceId = params.get('d') ?? params.get('device') ?? undefined;
    return deviceId ? { claimCode: normalizeCode(code), deviceId } : { claimCode: normalizeCode(code) };
  }
  const claimCode = normalizeCode(trimmed);
  return claimCode ? { claimCode } : undefined;
}

// ---- the API ----

function apiKey() {
  return sessionStorage.getItem(KEY_STORE);
}

async function api(method, path, body, signal) {
  const headers = { authorization: `Bearer ${apiKey()}`, accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal, cache: 'no-store' });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError('NETWORK_DOWN', String(err?.message ?? err));
  }
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const retry = json?.retryAfterSeconds ?? (Number(res.headers.get('retry-after')) || undefined);
    throw new ApiError(json?.code ?? `HTTP_${res.status}`, json?.message ?? res.statusText, retry);
  }
  return json;
}

// ---- messages ----

function waitText(seconds) {
  if (!seconds || seconds < 1) return 'a moment';
  if (seconds < 90) return `${Math.ceil(seconds)} seconds`;
  const minutes = Math.ceil(seconds / 60);
  return minutes < 90 ? `${minutes} minutes` : `${Math.ceil(minutes / 60)} hours`;
}

export function explain(code, retryAfterSeconds) {
  const sentence = MESSAGES[code] ?? GENERIC;
  return sentence.replace('{wait}', waitText(retryAfterSeconds));
}

function showError(code, retryAfterSeconds) {
  $('error-text').textContent = explain(code, retryAfterSeconds);
  $('error-code').textContent = code;
  $('error').hidden = false;
  $('error').scrollIntoView({ block: 'nearest' });
}

function clearError() {
  $('error').hidden = true;
}

function fail(err) {
  if (err instanceof ApiError) {
    showError(err.code, err.retryAfterSeconds);
    if (err.code === 'AUTH_INVALID' || err.code === 'AUTH_REQUIRED') {
      sessionStorage.removeItem(KEY_STORE);
      show('signin');
    }
  } else showError('PAGE_ERROR');
}

// ---- views ----

function show(view) {
  for (const name of ['signin', 'claim', 'progress']) $(`${name}-view`).hidden = name !== view;
  $('signout').hidden = view === 'signin';
}

function recent() {
  try {
    const r = JSON.parse(localStorage.getItem(RECENT_STORE) ?? '{}');
    return { owners: Array.isArray(r.owners) ? r.owners : [], sites: Array.isArray(r.sites) ? r.sites : [] };
  } catch {
    return { owners: [], sites: [] };
  }
}

function remember(owner, site) {
  const r = recent();
  const add = (list, v) => [v, ...list.filter((x) => x !== v)].slice(0, 8);
  localStorage.setItem(RECENT_STORE, JSON.stringify({ owners: add(r.owners, owner), sites: add(r.sites, site) }));
}

function fillRecent() {
  const r = recent();
  for (const [list, values] of [['owner-list', r.owners], ['site-list', r.sites]]) {
    const el = $(list);
    el.replaceChildren(...values.map((v) => Object.assign(document.createElement('option'), { value: v })));
  }
  if (!$('owner').value && r.owners[0]) $('owner').value = r.owners[0];
  if (!$('site').value && r.sites[0]) $('site').value = r.sites[0];
}

async function loadProfiles() {
  try {
    const { items } = await api('GET', '/v1/profiles');
    const select = $('profile');
    select.replaceChildren(select.options[0]);
    for (const p of items) select.append(Object.assign(document.createElement('option'), { value: p.id, textContent: p.name ?? p.id }));
    $('profile-row').hidden = items.length === 0;
    return true;
  } catch (err) {
    fail(err);
    return false;
  }
}

async function enterClaim() {
  show('claim');
  fillRecent();
  await loadProfiles();
}

// ---- sign in ----

async function signIn(event) {
  event.preventDefault();
  clearError();
  const key = $('api-key').value.trim();
  if (!key) return showError('KEY_EMPTY');
  sessionStorage.setItem(KEY_STORE, key);
  $('signin-button').disabled = true;
  try {
    await api('GET', '/v1/profiles'); // any installer-readable call proves the key
    $('api-key').value = '';
    await enterClaim();
  } catch (err) {
    sessionStorage.removeItem(KEY_STORE);
    fail(err);
  } finally {
    $('signin-button').disabled = false;
  }
}

function signOut() {
  stopWatching();
  sessionStorage.removeItem(KEY_STORE);
  clearError();
  show('signin');
}

// ---- claim ----

function codeHint() {
  const parsed = parseLabelText($('claim-code').value);
  const hint = $('code-hint');
  if (!parsed) {
    hint.textContent = 'Spaces, dashes and upper/lower case do not matter.';
    hint.classList.remove('ok');
  } else {
    hint.textContent = `Code ${parsed.claimCode}${parsed.deviceId ? ` for device ${parsed.deviceId}` : ''}`;
    hint.classList.add('ok');
  }
}

function claimRequest() {
  const parsed = parseLabelText($('claim-code').value);
  if (!parsed) return { error: 'CODE_EMPTY' };
  const owner = $('owner').value.trim();
  const site = $('site').value.trim();
  if (!owner || !site) return { error: 'FIELDS_MISSING' };
  const body = { claimCode: parsed.claimCode, owner, site };
  if (parsed.deviceId) body.deviceId = parsed.deviceId;
  if ($('profile').value) body.profileId = $('profile').value;
  const ssid = $('ssid').value.trim();
  const secret = $('wifi-secret').value;
  if ($('wifi').open && (ssid || secret)) {
    if (!ssid) return { error: 'WIFI_INCOMPLETE' };
    const security = $('security').value;
    if (security !== 'open' && !secret) return { error: 'NETWORK_SECRET_REQUIRED' };
    body.network = { wifi: { ssid, security, hidden: $('hidden-ssid').checked, ...(security === 'open' ? {} : { secret }) } };
  }
  return { body };
}

async function claim(event) {
  event.preventDefault();
  clearError();
  const { body, error } = claimRequest();
  if (error) return showError(error);
  $('claim-button').disabled = true;
  try {
    const response = await api('POST', '/v1/claims', body);
    remember(body.owner, body.site);
    $('claim-code').value = '';
    $('wifi-secret').value = '';
    codeHint();
    watch(response.device, Boolean(response.bootstrap));
  } catch (err) {
    fail(err);
  } finally {
    $('claim-button').disabled = false;
  }
}

// ---- progress ----

let watching; // { id, abort: AbortController, poll: timer, live: boolean }

function render(device) {
  $('device-id').textContent = device.id;
  $('device-where').textContent = [device.owner, device.site].filter(Boolean).join(' · ');
  const state = device.state;
  const done = STATE_STEP[state];
  const items = $('steps').querySelectorAll('li');
  items.forEach((li, i) => {
    li.classList.toggle('done', done !== undefined && i <= done);
    li.classList.toggle('current', done !== undefined && i === done + 1);
  });
  const status = $('status');
  status.className = 'status';
  $('steps').dataset.state = state;
  if (state === 'provisioned') {
    status.textContent = 'Provisioned: the device is ready.';
    status.classList.add('done');
    $('bootstrap-note').hidden = true;
    stopWatching();
  } else if (state === 'stalled' || state === 'failed') {
    status.textContent = state === 'stalled' ? 'Stalled' : 'Failed';
    status.classList.add('problem');
    showError(state === 'stalled' ? 'DEVICE_STALLED' : 'DEVICE_FAILED');
  } else if (done === undefined) {
    status.textContent = `The device is now ${state.replace(/_/g, ' ')}.`;
    status.classList.add('problem');
    stopWatching();
  } else {
    status.textContent = `Waiting for the device: ${STEPS[done + 1]}…`;
  }
}

async function refresh() {
  if (!watching) return;
  try {
    const device = await api('GET', `/v1/devices/${encodeURIComponent(watching.id)}`, undefined, watching.abort.signal);
    if (watching && device.id === watching.id) render(device);
  } catch (err) {
    if (err?.name === 'AbortError') return;
    if (err instanceof ApiError && err.code === 'NETWORK_DOWN') $('live').textContent = 'Connection lost; retrying…';
    else fail(err);
  }
}

function schedulePoll() {
  if (!watching) return;
  clearTimeout(watching.poll);
  // the stream carries the news; polling only backs it up (slowly while the stream is open)
  watching.poll = setTimeout(async () => {
    await refresh();
    schedulePoll();
  }, watching.live ? 10_000 : 2_000);
}

/** Reads the device's SSE stream with fetch (Authorization header); reconnects with Last-Event-ID. */
async function stream(w) {
  let lastEventId;
  let delay = 1000;
  while (watching === w) {
    try {
      const headers = { authorization: `Bearer ${apiKey()}`, accept: 'text/event-stream' };
      if (lastEventId) headers['last-event-id'] = lastEventId;
      const res = await fetch(`/v1/devices/${encodeURIComponent(w.id)}/events`, { headers, signal: w.abort.signal, cache: 'no-store' });
      if (!res.ok || !res.body) throw new Error(`stream answered ${res.status}`);
      w.live = true;
      $('live').textContent = 'Live updates on.';
      schedulePoll();
      void refresh(); // anything that happened before the stream opened
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
          const fields = {};
          for (const line of block.split(/\r?\n/)) {
            const m = /^([a-z]+): ?(.*)$/i.exec(line);
            if (m) fields[m[1]] = fields[m[1]] === undefined ? m[2] : `${fields[m[1]]}\n${m[2]}`;
          }
          if (fields.id) lastEventId = fields.id;
          if (fields.event && EVENT_STATE[fields.event]) void refresh(); // the device record is the truth (it also knows 'configuring')
        }
      }
      delay = 1000;
    } catch (err) {
      if (err?.name === 'AbortError' || watching !== w) return;
    }
    if (watching !== w) return;
    w.live = false;
    $('live').textContent = 'Checking every few seconds.';
    schedulePoll();
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 30_000);
  }
}

function watch(device, bootstrapped) {
  stopWatching();
  show('progress');
  $('bootstrap-note').hidden = !bootstrapped;
  $('live').textContent = '';
  watching = { id: device.id, abort: new AbortController(), poll: undefined, live: false };
  render(device);
  if (!watching) return; // already done
  schedulePoll();
  void stream(watching);
}

function stopWatching() {
  if (!watching) return;
  const w = watching;
  watching = undefined;
  clearTimeout(w.poll);
  w.abort.abort();
  $('live').textContent = '';
}

// ---- start ----

function start() {
  $('signin-form').addEventListener('submit', signIn);
  $('claim-form').addEventListener('submit', claim);
  $('claim-code').addEventListener('input', () => {
    codeHint();
    clearError(); // a new code: the last refusal no longer applies
  });
  $('signout').addEventListener('click', signOut);
  $('another').addEventListener('click', () => {
    stopWatching();
    clearError();
    void enterClaim();
  });
  if (apiKey()) void enterClaim();
  else show('signin');
}

start();
