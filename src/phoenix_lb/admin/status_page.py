"""The status page's HTML, JavaScript and CSS, served by the admin listener (no CDN).

Minimal first version; see the status page issue notes for the full page.
"""

from __future__ import annotations

STATUS_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Phoenix LB status</title>
<link rel="stylesheet" href="/status.css"></head>
<body><h1>Phoenix LB</h1><div id="app">loading...</div>
<script src="/status.js"></script></body></html>
"""

STATUS_JS = b"""'use strict';
async function refresh() {
  const r = await fetch('/api/status');
  const data = await r.json();
  const app = document.getElementById('app');
  app.textContent = '';
  for (const u of data.upstreams) {
    const h = document.createElement('h2'); h.textContent = u.name; app.appendChild(h);
    const t = document.createElement('table');
    for (const s of u.servers) {
      const row = t.insertRow(); row.dataset.server = s.address;
      row.insertCell().textContent = s.address;
      row.insertCell().textContent = s.state;
      row.insertCell().textContent = s.in_flight;
    }
    app.appendChild(t);
  }
}
refresh(); setInterval(refresh, 2000);
"""

STATUS_CSS = b"""body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; } td { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; }
"""
