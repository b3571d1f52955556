// provisiond dashboard: plain JS, no framework. Data comes from /dashboard/api/* (session cookie,
// X-CSRF-Token on changes) and live events from /v1/events (EventSource, same cookie).
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  let session = null;
  let overview = null;
  let events = null;
  let currentDevice = null;
  const stalledPages = [undefined]; // `after` cursor of each page seen
  let stalledIndex = 0;
  let stalledNext;

  const STAGE_LABELS = { registered: 'Registered', claimed: 'Claimed', identity: 'Identity issued', configuring: 'Configuring', provisioned: 'Provisioned' };
  const FRIENDLY = {
    AUTH_INVALID: 'That API key is not valid. Check that you pasted all of it.',
    AUTH_REQUIRED: 'Please sign in.',
    SESSION_REQUIRED: 'Your session has ended. Please sign in again.',
    CSRF_TOKEN_INVALID: 'This page is out of date. Reload it and try again.',
    ROLE_FORBIDDEN: 'Your key\u2019s role does not allow this. Sign in with an admin key to change devices.',
    RELEASE_WINDOW_CLOSED: 'The provisional window is over: only an admin can release this device now.',
    ILLEGAL_TRANSITION: 'The device is not in a state that allows this action.',
    DEVICE_STATE_INVALID: 'The device is not in a state that allows this action.',
    DEVICE_NOT_FOUND: 'There is no such device in your tenant.',
    RATE_LIMITED: 'Too many requests just now. Wait a moment and try again.',
    SERVICE_STOPPING: 'The service is restarting. Try again in a few seconds.',
  };

  const el = (tag, props, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') node.className = v;
      else if (k === 'style') Object.assign(node.style, v); // CSSOM, allowed by the CSP (style attributes are not)
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
    return node;
  };
  const when = (iso) => (iso ? new Date(iso).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' }) : '–');
  const ago = (iso) => {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 90) return `${s} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 129600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} days ago`;
  };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }
  const friendly = (err) => (err instanceof ApiError ? FRIENDLY[err.code] || err.message || `The service answered ${err.status}.` : 'The service cannot be reached. Check your connection and try again.');

  async function api(method, path, body) {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET' && session) headers['x-csrf-token'] = session.csrfToken;
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin', cache: 'no-store' });
    } catch {
      throw new ApiError(0, 'NETWORK', '');
    }
    if (res.status === 204) return undefined;
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new ApiError(res.status, data.code || 'HTTP_' + res.status, data.message || '');
    return data;
  }

  function say(text, kind) {
    const m = $('message');
    m.textContent = text || '';
    m.className = kind === 'info' ? 'message info' : 'message';
    m.hidden = !text;
  }

  function show(view) {
    for (const id of ['signin', 'overview', 'device']) $(id).hidden = id !== view;
    const signedIn = view !== 'signin';
    $('who').hidden = $('logout').hidden = $('live').hidden = !signedIn;
  }

  // ------------------------------------------------------------------ session
  async function start() {
    try {
      const current = await api('GET', '/dashboard/api/session');
      session = current.signedIn ? current : null;
    } catch (err) {
      say(friendly(err));
    }
    if (session) signedIn();
    else signedOut();
  }

  function signedOut() {
    session = null;
    stopEvents();
    show('signin');
    $('apikey').focus();
  }

  function signedIn() {
    $('who').textContent = `${session.tenantId} \u00b7 ${session.role}`;
    connectEvents();
    route();
  }

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('apikey');
    try {
      session = await api('POST', '/dashboard/api/session', { apiKey: input.value });
      input.value = ''; // the key is not kept
      say('');
      signedIn();
    } catch (err) {
      say(friendly(err));
    }
  });

  $('logout').addEventListener('click', async () => {
    stopEvents();
    try {
      await api('DELETE', '/dashboard/api/session');
    } catch {
      // signed out either way
    }
    location.hash = '#/';
    signedOut();
  });

  // ------------------------------------------------------------------ live events
  const EVENT_TYPES = ['device.claimed', 'device.identity_issued', 'device.provisioned', 'device.stalled', 'device.failed', 'device.released', 'device.revoked', 'device.decommissioned', 'device.configuring', 'device.registered'];
  let refreshTimer = null;
  let trailingTimer = null;
  function refreshOverview() {
    refreshTimer = null;
    if ($('overview').hidden) return;
    loadOverview().catch((err) => say(friendly(err)));
    loadStalled().catch((err) => say(friendly(err)));
  }
  function stopEvents() {
    if (events) events.close();
    events = null;
    clearTimeout(refreshTimer);
    clearTimeout(trailingTimer);
    refreshTimer = trailingTimer = null;
  }
  function connectEvents() {
    if (events) events.close();
    events = new EventSource('/v1/events');
    events.onopen = () => $('live').classList.remove('off');
    events.onerror = () => {
      $('live').classList.add('off');
      if (events && events.readyState === EventSource.CLOSED) {
        // the server refused (e.g. the session ended): find out why, then reconnect or sign out
        setTimeout(() => session && api('GET', '/dashboard/api/session').then((s) => (s.signedIn ? connectEvents() : signedOut()), () => {}), 3000);
      }
    };
    const onEvent = (e) => {
      let data = {};
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      scheduleRefresh(data.deviceId);
    };
    for (const t of EVENT_TYPES) events.addEventListener(t, onEvent);
    events.onmessage = onEvent;
  }
  function scheduleRefresh(deviceId) {
    if (currentDevice && deviceId === currentDevice && !$('device').hidden) {
      loadDevice(currentDevice).catch(() => {});
    }
    // The server caches the overview for a moment (cacheMs): one refresh soon after the first event
    // of a burst, and a trailing one once the cache has expired after the last event, so the page
    // always ends on numbers that include every event.
    if (!refreshTimer) refreshTimer = setTimeout(refreshOverview, 600);
    clearTimeout(trailingTimer);
    trailingTimer = setTimeout(refreshOverview, ((overview && overview.cacheMs) || 2000) + 300);
  }

  // ------------------------------------------------------------------ routing
  window.addEventListener('hashchange', () => session && route());
  function route() {
    const m = /^#\/device\/(.+)$/.exec(location.hash);
    if (m) {
      currentDevice = decodeURIComponent(m[1]);
      show('device');
      loadDevice(currentDevice).catch((err) => say(friendly(err)));
    } else {
      currentDevice = null;
      show('overview');
      loadOverview().catch((err) => say(friendly(err)));
      loadStalled().catch((err) => say(friendly(err)));
    }
  }

  // ------------------------------------------------------------------ overview
  async function loadOverview() {
    overview = await api('GET', '/dashboard/api/overview');
    renderOverview();
  }

  function renderOverview() {
    const all = overview.all;
    $('total').textContent = all.total;
    $('provisioned').textContent = all.funnel[all.funnel.length - 1].count;
    $('stalled-count').textContent = all.stalled;
    $('failed-count').textContent = all.failed;
    $('generated').textContent = `as of ${new Date(overview.generatedAt).toLocaleTimeString()}`;

    const by = $('group-by').value;
    const keySel = $('group-key');
    let group = all;
    if (by !== 'all') {
      const groups = by === 'profile' ? overview.byProfile : overview.bySite;
      const previous = keySel.value;
      keySel.replaceChildren(...groups.map((g) => el('option', { value: g.key }, g.key)));
      if (groups.some((g) => g.key === previous)) keySel.value = previous;
      keySel.hidden = false;
      group = groups.find((g) => g.key === keySel.value) || { funnel: all.funnel.map((s) => ({ ...s, count: 0, percent: 0 })), stalled: 0, failed: 0 };
    } else keySel.hidden = true;

    $('funnel').replaceChildren(
      ...group.funnel.map((s) =>
        el('li', { 'data-stage': s.stage }, el('span', {}, STAGE_LABELS[s.stage] || s.stage), el('div', { class: 'bar' }, el('span', { style: { width: `${s.percent}%` } })), el('span', { class: 'num' }, el('b', { class: 'count' }, s.count), ` \u00b7 ${s.percent}%`)),
      ),
      el('li', { 'data-stage': 'stalled' }, el('span', {}, 'Stalled / failed'), el('span', { class: 'muted' }, 'stuck before provisioned'), el('span', { class: 'num' }, el('b', {}, group.stalled), ' / ', el('b', {}, group.failed))),
    );

    const h = overview.timeToProvisioned;
    $('ttp-count').textContent = h.count;
    const max = Math.max(1, ...h.buckets.map((b) => b.count));
    $('histogram').replaceChildren(
      ...h.buckets.map((b) => el('div', { class: 'col', title: `${b.label}: ${b.count}` }, el('em', {}, b.count || ''), el('span', { class: 'b', style: { height: `${Math.round((b.count / max) * 110)}px` } }), el('small', {}, b.label))),
    );
  }
  $('group-by').addEventListener('change', () => overview && renderOverview());
  $('group-key').addEventListener('change', () => overview && renderOverview());

  async function loadStalled() {
    const after = stalledPages[stalledIndex];
    const page = await api('GET', '/dashboard/api/stalled?limit=25' + (after ? '&after=' + encodeURIComponent(after) : ''));
    stalledNext = page.next;
    const rows = page.items.map((s) =>
      el(
        'tr',
        { 'data-device': s.deviceId },
        el('td', {}, el('a', { href: '#/device/' + encodeURIComponent(s.deviceId) }, s.deviceId)),
        el('td', {}, s.model),
        el('td', {}, s.profileId || '–'),
        el('td', {}, s.site || '–'),
        el('td', { class: 'missing' }, s.missing.length ? s.missing.map((m) => (m === 'identity' ? 'identity (no certificate)' : m)).join(', ') : '–'),
        el('td', { title: when(s.since) }, ago(s.since)),
      ),
    );
    $('stalled-rows').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: '6', class: 'empty' }, 'No stalled devices.'))]));
    $('stalled-prev').disabled = stalledIndex === 0;
    $('stalled-next').disabled = !stalledNext;
    $('stalled-page').textContent = `page ${stalledIndex + 1}`;
  }
  $('stalled-next').addEventListener('click', () => {
    if (!stalledNext) return;
    stalledPages[++stalledIndex] = stalledNext;
    loadStalled().catch((err) => say(friendly(err)));
  });
  $('stalled-prev').addEventListener('click', () => {
    if (stalledIndex === 0) return;
    stalledIndex--;
    loadStalled().catch((err) => say(friendly(err)));
  });

  // ------------------------------------------------------------------ device page
  const ACTIONS = [
    { id: 'release', label: 'Release', roles: ['admin'], danger: false, text: 'The device goes back to the unclaimed pool: its certificate is revoked and a new claim starts over.', reason: true },
    { id: 'config-push', label: 'Re-push configuration', roles: ['admin'], danger: false, text: 'The current profile\u2019s configuration is signed again and sent to the device.', reason: false },
    { id: 'revoke', label: 'Revoke', roles: ['admin'], danger: true, text: 'The device\u2019s certificate is revoked: it can no longer connect until it is re-provisioned.', reason: true },
    { id: 'decommission', label: 'Decommission', roles: ['admin'], danger: true, text: 'The device is retired for good. This cannot be undone.', reason: true },
  ];

  const OUT_OF_FUNNEL = ['released', 'revoked', 'decommissioned'];

  async function loadDevice(id) {
    const d = await api('GET', '/dashboard/api/devices/' + encodeURIComponent(id));
    if (currentDevice !== id) return;
    const dev = d.device;
    $('device-id').textContent = dev.id;
    const state = $('device-state');
    state.textContent = dev.state.replace('_', ' ');
    state.className = 'state ' + dev.state;
    state.dataset.state = dev.state;
    const facts = [
      ['Model', dev.model],
      ['Owner', dev.owner],
      ['Site', dev.site],
      ['Profile', dev.profileId ? `${dev.profileId} v${dev.profileVersion}` : undefined],
      ['Claimed', when(dev.claimedAt)],
      ['Provisioned', when(dev.provisionedAt)],
      ['Deadline', when(dev.deadlineAt)],
      ['Stalled since', dev.state === 'stalled' && dev.stalledAt ? `${when(dev.stalledAt)} (${ago(dev.stalledAt)})` : undefined],
      ['Missing', OUT_OF_FUNNEL.includes(dev.state) ? undefined : d.missing.length ? d.missing.map((m) => (m === 'identity' ? 'identity (no certificate)' : m)).join(', ') : 'nothing'],
      ['Certificate', dev.certificateSerial],
    ];
    $('device-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v === undefined ? '–' : v)]));

    $('actions').replaceChildren(
      ...ACTIONS.filter((a) => a.roles.includes(session.role)).map((a) => el('button', { type: 'button', class: a.danger ? 'danger' : 'quiet', 'data-action': a.id, onclick: () => confirmAction(dev.id, a) }, a.label)),
    );
    if (!$('actions').children.length) $('actions').append(el('span', { class: 'muted' }, 'Sign in with an admin key to release, re-push configuration, revoke or decommission.'));

    $('timeline').replaceChildren(
      ...d.history.map((e) =>
        el('tr', {}, el('td', {}, when(e.at)), el('td', {}, e.type.replace(/_/g, ' ')), el('td', {}, e.from && e.to ? `${e.from} \u2192 ${e.to}` : e.to || '–'), el('td', {}, e.actor), el('td', {}, e.reason || (e.details && e.details.reason) || '')),
      ),
    );

    const items = (dev.config && dev.config.items) || [];
    $('config-summary').textContent = dev.config ? `Version ${dev.config.version}: ${items.filter((i) => i.status === 'applied').length} of ${items.length} items applied.` : 'No configuration sent yet.';
    $('config-items').replaceChildren(
      ...(items.length
        ? items.map((i) => el('tr', {}, el('td', {}, i.id), el('td', {}, i.required ? 'yes' : 'no'), el('td', { class: i.required && i.status !== 'applied' ? 'missing' : '' }, i.status), el('td', {}, when(i.ackedAt)), el('td', {}, i.error || '')))
        : [el('tr', {}, el('td', { colspan: '5', class: 'empty' }, 'No configuration items.'))]),
    );
    $('certificates').replaceChildren(
      ...(d.certificates.length
        ? d.certificates.map((c) => el('tr', {}, el('td', {}, c.serial), el('td', {}, c.status), el('td', {}, when(c.issuedAt)), el('td', {}, when(c.notAfter)), el('td', {}, c.revokedAt ? `${when(c.revokedAt)} (${c.revocationReason || 'unspecified'})` : '')))
        : [el('tr', {}, el('td', { colspan: '5', class: 'empty' }, 'No certificate issued yet.'))]),
    );
  }

  function confirmAction(deviceId, action) {
    const dialog = $('confirm');
    $('confirm-title').textContent = `${action.label} ${deviceId}?`;
    $('confirm-text').textContent = action.text;
    $('confirm-reason').value = '';
    $('confirm-reason').hidden = $('confirm-reason-label').hidden = !action.reason;
    $('confirm-ok').className = action.danger ? 'danger' : '';
    $('confirm-ok').textContent = action.label;
    dialog.returnValue = '';
    dialog.onclose = async () => {
      if (dialog.returnValue !== 'ok') return;
      const reason = $('confirm-reason').value.trim();
      try {
        await api('POST', `/dashboard/api/devices/${encodeURIComponent(deviceId)}/${action.id}`, action.reason && reason ? { reason } : {});
        say(`${action.label}: done.`, 'info');
        await loadDevice(deviceId);
      } catch (err) {
        say(`${action.label} failed: ${friendly(err)}`);
      }
    };
    dialog.showModal();
  }

  start();
})();
