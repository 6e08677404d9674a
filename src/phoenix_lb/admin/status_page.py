"""The status page's HTML, JavaScript and CSS, served by the admin listener.

Like HAProxy's stats page, but it redraws itself instead of the whole
document: every 2 s the script polls ``GET /api/status`` (the JSON of
``admin/status.py status_view``) and updates the cells of the rows it already
has, so scroll position, text selection and keyboard focus survive a refresh.
Rows are keyed by upstream name and server address; a reload that adds or
removes servers adds or removes just those rows.

Rules the page keeps:

* Nothing from outside the admin listener: no CDN, no web font, no image
  (the favicon is an empty ``data:`` URL so the browser does not ask for one).
  The HTML carries a Content-Security-Policy that allows scripts, styles and
  fetches from the admin listener's own origin only.
* Data never becomes markup: every value reaches the DOM through
  ``textContent``, ``dataset`` or a class name taken from a fixed list.
* Drain, enable and disable call ``POST /api/upstreams/{u}/servers/{addr}/
  {action}`` with both path parts URL-encoded (an address holds ``:`` and
  IPv6 ``[...]``).
* When the API answers 401 (``admin.auth_token_file`` is set) the page asks
  for the token, keeps it in ``sessionStorage`` (gone when the tab closes,
  never in a cookie, so no other site can make the browser send it) and sends
  ``Authorization: Bearer`` on every API call.
"""

from __future__ import annotations

from typing import Final

# Element ids and data-* attributes below are also what the browser test
# (tests/integration/test_status_page.py) looks for.

STATUS_HTML: Final = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'self'; \
style-src 'self'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<title>Phoenix LB status</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/status.css">
</head>
<body>
<header id="top">
  <h1>Phoenix LB</h1>
  <dl id="summary">
    <div><dt>health</dt><dd><span id="health" class="badge unknown">loading</span></dd></div>
    <div><dt>workers</dt><dd id="workers">-</dd></div>
    <div><dt>uptime</dt><dd id="uptime">-</dd></div>
    <div><dt>reloads</dt><dd id="reloads">-</dd></div>
    <div><dt>build</dt><dd id="build">-</dd></div>
  </dl>
  <p id="updated" class="muted">connecting...</p>
</header>
<div id="reasons" class="notice bad" hidden></div>
<div id="message" class="notice" role="status" aria-live="polite" hidden></div>
<form id="auth" class="notice" hidden>
  <label for="token">This admin listener requires a token
    (the contents of <code>admin.auth_token_file</code>):</label>
  <input id="token" type="password" autocomplete="off" spellcheck="false" size="40">
  <button id="token-save" type="submit">Use token</button>
  <span id="auth-error" class="bad-text"></span>
</form>
<main>
  <section id="listeners-section">
    <h2>Listeners</h2>
    <table id="listeners">
      <thead><tr>
        <th>listener</th><th class="num">active</th><th class="num">reading</th>
        <th class="num">writing</th><th class="num">waiting</th><th class="num">conn/s</th>
        <th class="num">req/s</th><th class="num">requests</th>
      </tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <div id="upstreams"></div>
</main>
<footer class="muted">Rates, error ratios and latencies cover the last
<span id="window">-</span>; totals count since start.
<button id="forget-token" type="button" hidden>Forget token</button></footer>
<script src="/status.js"></script>
</body>
</html>
"""

STATUS_JS: Final = rb"""'use strict';
(function () {
  const REFRESH_MS = 2000;
  const TOKEN_KEY = 'phoenix-lb-admin-token';
  // Class names come from this list only, never from the data.
  const STATES = ['up', 'down', 'draining', 'disabled', 'backup', 'unresolved'];
  const ACTIONS = [['drain', 'Drain'], ['enable', 'Enable'], ['disable', 'Disable']];
  const SERVER_COLUMNS = ['state', 'weight', 'inflight', 'rps', 'errors', 'p50', 'p99',
    'check', 'ejections', 'total'];

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let lastOk = 0;
  // Polls may overlap (a button's refresh during a timed one): never let an
  // older answer overwrite a newer one.
  let sent = 0;
  let shown = 0;

  // -- the API ------------------------------------------------------------

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  class AuthRequired extends Error {}

  async function api(method, path) {
    const headers = {'Accept': 'application/json'};
    const t = token();
    if (t) headers['Authorization'] = 'Bearer ' + t;
    const response = await fetch(path, {method: method, headers: headers,
      cache: 'no-store', credentials: 'omit'});
    if (response.status === 401) throw new AuthRequired();
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const why = data && data.error ? data.error : 'HTTP ' + response.status;
      throw new Error(why);
    }
    return data;
  }

  // -- small helpers ------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Write only what changed: keeps selections and avoids layout work.
  function setText(node, text) {
    text = String(text);
    if (node.textContent !== text) node.textContent = text;
  }

  function setTitle(node, text) {
    if (node.title !== text) node.title = text;
  }

  function setClass(node, cls) {
    if (node.className !== cls) node.className = cls;
  }

  function setBadge(node, state) {
    const known = STATES.indexOf(state) >= 0 ? state : 'unknown';
    setClass(node, 'badge ' + known);
    setText(node, state);
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
    const m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + s + 's';
    return s + 's';
  }

  function latency(seconds) {
    if (seconds === null || seconds === undefined) return '\u2013';
    if (seconds >= 1) return seconds.toFixed(2) + ' s';
    const ms = seconds * 1000;
    return (ms >= 10 ? ms.toFixed(0) : ms.toFixed(1)) + ' ms';
  }

  function rate(value) {
    return value >= 100 ? value.toFixed(0) : value.toFixed(1);
  }

  function percent(ratio) {
    return (ratio * 100).toFixed(ratio >= 0.1 ? 0 : 1) + '%';
  }

  let messageTimer = null;

  // A line about the last action; it goes away after a while.
  function message(text, bad) {
    const box = $('message');
    setText(box, text);
    box.className = 'notice' + (bad ? ' bad' : '');
    box.hidden = !text;
    clearTimeout(messageTimer);
    if (text) messageTimer = setTimeout(() => { box.hidden = true; }, 10000);
  }

  // -- header -------------------------------------------------------------

  function renderSummary(data) {
    const health = $('health');
    setBadge(health, data.health.ok ? 'up' : 'down');
    setText(health, data.health.ok ? 'ok' : 'unavailable');
    const reasons = $('reasons');
    setText(reasons, data.health.reasons.join('; '));
    reasons.hidden = data.health.ok;
    setText($('workers'), data.workers);
    setText($('uptime'), duration(data.uptime_seconds));
    const r = data.reloads;
    setText($('reloads'), r.ok + ' ok, ' + r.failed + ' failed' +
      (r.last_ok ? '' : ' (last one failed)'));
    setClass($('reloads'), r.last_ok ? '' : 'bad-text');
    setText($('build'), 'v' + data.version + ', ' + data.hot_path + ', ' + data.loop);
    setText($('window'), duration(data.window_seconds || 0));
  }

  // -- listeners ----------------------------------------------------------

  function renderListeners(listeners) {
    const body = document.querySelector('#listeners tbody');
    const rows = new Map();
    for (const row of body.rows) rows.set(row.dataset.listener, row);
    let before = body.firstChild;
    for (const item of listeners) {
      let row = rows.get(item.name);
      if (!row) {
        row = el('tr');
        row.dataset.listener = item.name;
        row.appendChild(el('th', 'name'));
        for (const c of ['active', 'reading', 'writing', 'waiting', 'cps', 'rps', 'total']) {
          row.appendChild(el('td', 'num ' + c));
        }
      }
      rows.delete(item.name);
      if (row !== before) body.insertBefore(row, before); else before = before.nextSibling;
      const c = item.connections;
      const cells = row.cells;
      setText(cells[0], item.name);
      setTitle(cells[0], (item.bind || []).join(', '));
      setText(cells[1], c.reading + c.writing + c.waiting);
      setText(cells[2], c.reading);
      setText(cells[3], c.writing);
      setText(cells[4], c.waiting);
      setText(cells[5], rate(item.connections_per_second));
      setText(cells[6], rate(item.requests_per_second));
      setText(cells[7], item.requests_total);
    }
    for (const row of rows.values()) row.remove();
  }

  // -- upstreams ----------------------------------------------------------

  function upstreamSection(name) {
    const section = el('section', 'upstream');
    section.dataset.upstream = name;
    const heading = el('h2');
    heading.appendChild(el('span', 'name'));
    heading.appendChild(el('span', 'meta muted'));
    section.appendChild(heading);
    const table = el('table', 'servers');
    const head = table.createTHead().insertRow();
    const titles = [['server', ''], ['state', ''], ['weight', 'num'], ['in-flight', 'num'],
      ['req/s', 'num'], ['errors', 'num'], ['p50', 'num'], ['p99', 'num'],
      ['last check', ''], ['ejections', 'num'], ['requests', 'num'], ['', 'actions']];
    for (const [text, cls] of titles) head.appendChild(el('th', cls, text));
    table.appendChild(el('tbody'));
    section.appendChild(table);
    return section;
  }

  function serverRow(upstream, address) {
    const row = el('tr', 'server');
    row.dataset.server = address;
    row.appendChild(el('th', 'address', address));
    for (const c of SERVER_COLUMNS) {
      const cell = el('td', c);
      if (c === 'state') cell.appendChild(el('span', 'badge unknown'));
      if (['weight', 'inflight', 'rps', 'errors', 'p50', 'p99', 'ejections', 'total']
        .indexOf(c) >= 0) cell.classList.add('num');
      row.appendChild(cell);
    }
    const actions = el('td', 'actions');
    for (const [action, label] of ACTIONS) {
      const button = el('button', 'action ' + action, label);
      button.type = 'button';
      button.dataset.action = action;
      button.addEventListener('click', () => act(upstream, address, action, row));
      actions.appendChild(button);
    }
    row.appendChild(actions);
    return row;
  }

  function renderServer(row, s, healthChecked) {
    const cells = {};
    for (const cell of row.cells) cells[cell.classList[0]] = cell;
    const state = s.state;
    if (row.dataset.state !== state) row.dataset.state = state;
    setBadge(cells.state.firstChild, state);
    setTitle(cells.state, s.healthy ? '' : (s.health_reason || 'unhealthy'));
    setText(cells.weight, s.weight + (s.backup ? ' (backup)' : ''));
    setText(cells.inflight, s.in_flight);
    setText(cells.rps, rate(s.requests_per_second));
    setText(cells.errors, percent(s.error_ratio));
    cells.errors.classList.toggle('bad-text', s.error_ratio >= 0.05);
    setText(cells.p50, latency(s.p50_seconds));
    setText(cells.p99, latency(s.p99_seconds));
    const check = s.last_check;
    if (!healthChecked) {
      setText(cells.check, 'off');
      setTitle(cells.check, 'no active health check configured');
      setClass(cells.check, 'check muted');
    } else if (!check) {
      setText(cells.check, 'pending');
      setTitle(cells.check, '');
      setClass(cells.check, 'check muted');
    } else {
      const what = check.ok ? 'ok' : (check.reason || 'failed');
      setText(cells.check, what + ', ' + duration(check.age_seconds) + ' ago');
      setTitle(cells.check, check.reason || '');
      setClass(cells.check, 'check ' + (check.ok ? 'good-text' : 'bad-text'));
    }
    setText(cells.ejections, s.ejections_total);
    setText(cells.total, s.requests_total);
    for (const button of cells.actions.children) {
      const busy = row.dataset.busy === '1';
      const current = {drain: 'drain', enable: 'enabled', disable: 'disabled'}[
        button.dataset.action];
      const off = busy || s.admin === current;
      if (button.disabled !== off) button.disabled = off;
    }
  }

  function renderUpstreams(upstreams) {
    const box = $('upstreams');
    const sections = new Map();
    for (const section of box.children) sections.set(section.dataset.upstream, section);
    let before = box.firstChild;
    for (const u of upstreams) {
      let section = sections.get(u.name);
      if (!section) section = upstreamSection(u.name);
      sections.delete(u.name);
      if (section !== before) box.insertBefore(section, before);
      else before = before.nextSibling;
      setText(section.querySelector('h2 .name'), u.name);
      const up = u.servers.filter((s) => s.state === 'up' || s.state === 'backup').length;
      const meta = [u.balance, up + '/' + u.servers.length + ' up'];
      if (u.sticky) meta.push('sticky cookie ' + u.sticky);
      meta.push(u.health_check ? 'health checks on' : 'no health checks');
      const retries = Object.values(u.retries || {}).reduce((a, b) => a + b, 0);
      if (retries) meta.push(retries + ' retries');
      setText(section.querySelector('h2 .meta'), meta.join(' \u00b7 '));
      section.classList.toggle('all-down', up === 0);

      const body = section.querySelector('tbody');
      const rows = new Map();
      for (const row of body.rows) rows.set(row.dataset.server, row);
      let next = body.firstChild;
      for (const s of u.servers) {
        let row = rows.get(s.address);
        if (!row) row = serverRow(u.name, s.address);
        rows.delete(s.address);
        if (row !== next) body.insertBefore(row, next); else next = next.nextSibling;
        renderServer(row, s, u.health_check);
      }
      for (const row of rows.values()) row.remove();
    }
    for (const section of sections.values()) section.remove();
  }

  // -- polling and actions -------------------------------------------------

  function render(data) {
    renderSummary(data);
    renderListeners(data.listeners);
    renderUpstreams(data.upstreams);
  }

  function showAuth(refused) {
    const form = $('auth');
    const wasHidden = form.hidden;
    form.hidden = false;
    setText($('auth-error'), refused ? 'the token was refused' : '');
    setText($('updated'), 'waiting for the admin token');
    if (wasHidden) $('token').focus();
  }

  async function refresh() {
    clearTimeout(timer);
    const mine = ++sent;
    try {
      const data = await api('GET', '/api/status');
      if (mine < shown) return;
      shown = mine;
      render(data);
      lastOk = Date.now();
      $('auth').hidden = true;
      $('forget-token').hidden = !token();
      setText($('updated'), 'updated ' + new Date(lastOk).toLocaleTimeString());
      setClass($('updated'), 'muted');
    } catch (e) {
      if (e instanceof AuthRequired) {
        showAuth(!!token());
      } else {
        const since = lastOk ? ' (data from ' + new Date(lastOk).toLocaleTimeString() + ')' : '';
        setText($('updated'), 'cannot reach the admin API: ' + e.message + since);
        setClass($('updated'), 'bad-text');
      }
    } finally {
      // One pending timer whatever the overlap.
      clearTimeout(timer);
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  async function act(upstream, address, action, row) {
    const path = '/api/upstreams/' + encodeURIComponent(upstream) + '/servers/' +
      encodeURIComponent(address) + '/' + action;
    row.dataset.busy = '1';
    for (const button of row.querySelectorAll('button')) button.disabled = true;
    try {
      const result = await api('POST', path);
      message(result.upstream + ' ' + result.server + ': ' + result.state, false);
    } catch (e) {
      if (e instanceof AuthRequired) showAuth(!!token());
      else message(upstream + ' ' + address + ': ' + action + ' failed: ' + e.message, true);
    } finally {
      delete row.dataset.busy;
      await refresh();
    }
  }

  $('auth').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('token').value.trim();
    if (!value) return;
    try { sessionStorage.setItem(TOKEN_KEY, value); } catch (e) { /* private mode */ }
    $('token').value = '';
    refresh();
  });

  $('forget-token').addEventListener('click', () => {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ }
    refresh();
  });

  refresh();
})();
"""

STATUS_CSS: Final = b"""\
:root {
  --fg: #1d2329; --muted: #67717c; --line: #dde2e7; --head: #f3f5f7; --bg: #fff;
  --up: #1f7a3d; --down: #b42318; --draining: #a15c00; --disabled: #5b6570;
  --backup: #2457a6; --unresolved: #7a2e8a;
}
* { box-sizing: border-box; }
body {
  margin: 0; padding: 1rem 1.5rem 2rem; color: var(--fg); background: var(--bg);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
header#top {
  display: flex; flex-wrap: wrap; align-items: baseline; gap: 0.5rem 2rem;
  border-bottom: 2px solid var(--line); padding-bottom: 0.6rem; margin-bottom: 1rem;
}
h1 { font-size: 1.4rem; margin: 0; }
h2 { font-size: 1.1rem; margin: 1.4rem 0 0.4rem; }
h2 .meta { font-size: 0.85rem; font-weight: normal; margin-left: 0.8rem; }
dl#summary { display: flex; flex-wrap: wrap; gap: 0.3rem 1.5rem; margin: 0; }
dl#summary div { display: flex; gap: 0.4rem; align-items: baseline; }
dt { color: var(--muted); }
dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
#updated { margin: 0 0 0 auto; font-size: 0.85rem; }
.muted { color: var(--muted); }
.bad-text { color: var(--down); }
.good-text { color: var(--up); }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 0.3rem 0.6rem; border-bottom: 1px solid var(--line); text-align: left;
  white-space: nowrap; }
thead th { background: var(--head); font-weight: 600; font-size: 0.85rem; color: var(--muted); }
tbody th { font-weight: 600; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
table.servers th.address, table.servers thead th:first-child { width: 16em; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:hover { background: #f8fafb; }
tr[data-state="down"] th, tr[data-state="unresolved"] th { color: var(--down); }
tr[data-state="disabled"] { color: var(--muted); }
section.all-down h2 .name { color: var(--down); }
.badge {
  display: inline-block; min-width: 5.5em; padding: 0.1em 0.6em; border-radius: 1em;
  color: #fff; background: var(--muted); font-size: 0.8rem; font-weight: 600;
  text-align: center; text-transform: uppercase; letter-spacing: 0.03em;
}
.badge.up { background: var(--up); }
.badge.down { background: var(--down); }
.badge.draining { background: var(--draining); }
.badge.disabled { background: var(--disabled); }
.badge.backup { background: var(--backup); }
.badge.unresolved { background: var(--unresolved); }
td.actions { text-align: right; }
button {
  font: inherit; font-size: 0.8rem; padding: 0.15rem 0.6rem; margin-left: 0.25rem;
  border: 1px solid var(--line); border-radius: 4px; background: #fff; cursor: pointer;
}
button:hover:not(:disabled) { border-color: var(--fg); }
button:disabled { opacity: 0.4; cursor: default; }
button:focus-visible { outline: 2px solid var(--backup); outline-offset: 1px; }
.notice {
  padding: 0.5rem 0.8rem; margin: 0 0 0.8rem; border: 1px solid var(--line);
  border-radius: 4px; background: var(--head);
}
.notice.bad { border-color: var(--down); color: var(--down); background: #fff5f4; }
form#auth input { font: inherit; margin: 0 0.4rem; padding: 0.15rem 0.4rem; }
footer { margin-top: 1.5rem; font-size: 0.85rem; }
@media (max-width: 900px) {
  body { padding: 0.5rem; }
  section.upstream, #listeners-section { overflow-x: auto; }
}
"""
