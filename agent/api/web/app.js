// rpi-cluster status page: keeps the server-rendered table current.
//
// Node names, addresses and services are gossiped by other machines: they
// are untrusted input and only ever reach the page through textContent and
// attributes set from checked values, never as HTML.
'use strict';

(function () {
  const STATUSES = ['alive', 'suspect', 'failed', 'left'];
  const EVENT_KINDS = ['join', 'leave', 'fail', 'update', 'conflict'];
  const COALESCE_MS = 250;   // events arriving together cause one fetch
  const PERIODIC_MS = 5000;  // phi moves without events: refresh anyway

  const $ = (id) => document.getElementById(id);

  // el creates an element with a class and text content.
  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function num(v) {
    return typeof v === 'number' && isFinite(v) ? v : 0;
  }

  function statusClass(s) {
    return STATUSES.includes(s) ? s : 'unknown';
  }

  function formatBytes(b) {
    b = num(b);
    if (b < 1024) return b + ' B';
    const units = 'KMGT';
    let i = -1;
    do { b /= 1024; i++; } while (b >= 1024 && i < units.length - 1);
    return b.toFixed(1) + ' ' + units[i] + 'iB';
  }

  function formatPhi(phi) {
    phi = num(phi);
    return phi >= 1e6 ? '∞' : phi.toFixed(2);
  }

  // nodeURL links to a node's own page when its address looks like an IP.
  function nodeURL(n) {
    const port = num(n.http_port);
    if (!/^[0-9.]+$/.test(n.address || '') && !/^[0-9a-fA-F:]+$/.test(n.address || '')) return '';
    if (port <= 0 || port > 65535) return '';
    const host = n.address.includes(':') ? '[' + n.address + ']' : n.address;
    return 'http://' + host + ':' + port + '/';
  }

  function cell(label, className) {
    const td = el('td', className);
    td.dataset.label = label;
    return td;
  }

  function row(n) {
    const m = n.monitoring || {};
    const status = String(n.status || 'unknown');
    const tr = el('tr', 'node ' + statusClass(status) + (n.self ? ' self' : ''));

    const name = cell('Node', 'name');
    name.append(el('span', 'node-name', n.name));
    if (n.self) name.append(el('span', 'tag', 'this node'));
    const model = n.model || n.arch;
    if (model) name.append(el('span', 'model', model));
    tr.append(name);

    const ip = cell('IP', 'ip');
    const href = nodeURL(n);
    if (href) {
      const a = el('a', '', n.address);
      a.href = href;
      ip.append(a);
    } else {
      ip.textContent = n.address || '';
    }
    tr.append(ip);

    tr.append(Object.assign(cell('Port', 'num port'), { textContent: String(num(n.gossip_port)) }));

    const st = cell('Status');
    st.append(el('span', 'badge ' + statusClass(status), status));
    tr.append(st);

    const threshold = num(n.phi_threshold) > 0 ? num(n.phi_threshold) : 8;
    const phi = num(n.phi);
    const ph = cell('Suspicion φ', 'phi');
    const meter = el('meter');
    meter.min = 0;
    meter.max = threshold;
    meter.low = threshold / 2;
    meter.high = threshold * 0.8;
    meter.optimum = 0;
    meter.value = Math.min(phi, threshold);
    const wrap = el('span', 'phi-wrap');
    wrap.append(meter, el('span', 'phi-text', formatPhi(phi) + ' / ' + threshold));
    ph.append(wrap);
    tr.append(ph);

    tr.append(Object.assign(cell('CPU', 'num cpu'), { textContent: num(m.cpu_percent).toFixed(0) + ' %' }));
    tr.append(Object.assign(cell('Memory', 'mem'), {
      textContent: num(m.mem_total) > 0 ? formatBytes(m.mem_used) + ' / ' + formatBytes(m.mem_total) : '—',
    }));
    tr.append(Object.assign(cell('Load 1/5/15', 'load'), {
      textContent: [m.load1, m.load5, m.load15].map((v) => num(v).toFixed(2)).join(' / '),
    }));
    tr.append(Object.assign(cell('Temp', 'num temp'), {
      textContent: typeof m.temp_c === 'number' ? m.temp_c.toFixed(1) + ' °C' : '—',
    }));

    const svc = cell('Services', 'services');
    const list = el('span', 'svcs');
    const services = Array.isArray(n.services) ? n.services : [];
    if (services.length === 0) list.append(el('span', 'muted', 'none'));
    for (const s of services) {
      const chip = el('span', 'svc', s);
      chip.title = String(s);
      list.append(chip);
    }
    svc.append(list);
    tr.append(svc);
    return tr;
  }

  function renderCounts(nodes) {
    const counts = {};
    for (const n of nodes) counts[n.status] = (counts[n.status] || 0) + 1;
    const items = [];
    const total = el('li', 'count total');
    total.append(el('b', '', nodes.length), ' ' + (nodes.length === 1 ? 'node' : 'nodes'));
    items.push(total);
    for (const s of STATUSES) {
      const c = counts[s] || 0;
      const li = el('li', 'count ' + s + (c ? '' : ' zero'));
      li.append(el('b', '', c), ' ' + s);
      items.push(li);
    }
    $('counts').replaceChildren(...items);
  }

  function render(nodes) {
    if (!Array.isArray(nodes)) throw new Error('unexpected answer from /v1/nodes');
    const self = nodes.find((n) => n.self);
    if (self) {
      $('self').textContent = self.name;
      document.title = 'rpi-cluster · ' + self.name;
    }
    renderCounts(nodes);
    $('alone').hidden = nodes.length > 1;
    $('rows').replaceChildren(...nodes.map(row));
    $('updated').textContent = 'updated ' + clock(new Date());
  }

  // renderWarnings shows what /healthz says is open to the LAN, so a token
  // set or dropped by a reload shows without reloading the page.
  function renderWarnings(warnings) {
    if (!Array.isArray(warnings)) return;
    $('warnings').replaceChildren(...warnings.map((w) => {
      const d = el('div', 'notice insecure');
      d.setAttribute('role', 'alert');
      d.append(el('strong', '', 'Open to the LAN'), ' ' + String(w));
      return d;
    }));
  }

  // renderConflicts shows the node names offered with another signing key
  // than the one this agent pinned (GET /v1/conflicts).
  function renderConflicts(list) {
    if (!Array.isArray(list)) return;
    $('conflicts').replaceChildren(...list.map((k) => {
      const d = el('div', 'notice insecure');
      d.setAttribute('role', 'alert');
      d.append(el('strong', '', 'Key conflict: ' + String(k.node)),
        'pinned ' + String(k.pinned_fingerprint) + ', offered ' + String(k.offered_fingerprint) + ' (' + String(k.count) +
        ' messages refused). Another member speaks for this node, or its card was reinstalled: then run `rpi-agent rekey ' + String(k.node) + '`.');
      return d;
    }));
  }

  function clock(d) {
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((v) => String(v).padStart(2, '0')).join(':');
  }

  function showError(msg) {
    const e = $('error');
    e.textContent = msg || '';
    e.hidden = !msg;
  }

  // Fetches are coalesced: one in flight at a time, and anything asked for
  // meanwhile becomes a single follow-up fetch.
  let inflight = false;
  let again = false;
  let timer = null;

  function schedule(delay) {
    if (timer !== null) return;
    timer = setTimeout(() => { timer = null; refresh(); }, delay);
  }

  async function refresh() {
    if (inflight) { again = true; return; }
    inflight = true;
    try {
      const res = await fetch('/v1/nodes', { cache: 'no-store', headers: { Accept: 'application/json' } });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      render(await res.json());
      const health = await fetch('/healthz', { cache: 'no-store', headers: { Accept: 'application/json' } });
      if (health.ok) renderWarnings((await health.json()).warnings);
      const conflicts = await fetch('/v1/conflicts', { cache: 'no-store', headers: { Accept: 'application/json' } });
      if (conflicts.ok) renderConflicts(await conflicts.json());
      showError('');
    } catch (err) {
      showError('Cannot reach this agent (' + err.message + '); showing the last known state.');
    } finally {
      inflight = false;
      if (again) { again = false; schedule(COALESCE_MS); }
    }
  }

  function live(state, text) {
    const l = $('live');
    l.dataset.state = state;
    l.textContent = text;
    l.title = '';
  }

  // The event stream. EventSource reconnects by itself after a dropped
  // connection, sending the last event id it saw so the agent replays what
  // was missed (or sends "reset" when it no longer has it). It gives up for
  // good on an HTTP error, such as the 503 of a refused stream: then the page
  // opens a new one after a growing, jittered delay, passing the last id it
  // saw in the query.
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 60000;
  let lastEventId = '';
  let backoff = BACKOFF_MIN_MS;

  function connect() {
    const resuming = lastEventId !== '';
    const es = new EventSource('/v1/events' + (resuming ? '?last_event_id=' + encodeURIComponent(lastEventId) : ''));
    let opened = false;
    es.onopen = () => {
      live('live', 'live');
      backoff = BACKOFF_MIN_MS;
      // Nothing to resume from: load the table. Later opens resume.
      if (!opened && !resuming) schedule(0);
      opened = true;
    };
    es.onerror = () => {
      live('reconnecting', 'reconnecting…');
      if (es.readyState !== EventSource.CLOSED) return; // it retries by itself
      const delay = backoff / 2 + Math.random() * backoff / 2;
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      setTimeout(connect, delay);
    };
    const seen = (e) => { if (e.lastEventId) lastEventId = e.lastEventId; };
    for (const kind of EVENT_KINDS) es.addEventListener(kind, (e) => { seen(e); schedule(COALESCE_MS); });
    es.addEventListener('reset', (e) => { seen(e); schedule(0); });
  }

  function start() {
    live('reconnecting', 'connecting…');
    if (typeof EventSource === 'function') {
      connect();
    } else {
      live('static', 'polling');
    }
    setInterval(() => schedule(0), PERIODIC_MS);
    refresh();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
