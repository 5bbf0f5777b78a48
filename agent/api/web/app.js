// rpi-cluster status page: keeps the server-rendered table current.
//
// Node names, addresses and services are gossiped by other machines: they
// are untrusted input and only ever reach the page through textContent and
// attributes set from checked values, never as HTML.
'use strict';

(function () {
  const STATUSES = ['alive', 'suspect', 'failed', 'left'];
  const EVENT_KINDS = ['join', 'leave', 'fail', 'update', 'reap', 'conflict'];
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

  // The agent's clock minus the browser's, from the last history answer:
  // samples are aged on the agent's time, not on a laptop's that may be off.
  let clockSkewMs = 0;
  const agentNow = () => Date.now() + clockSkewMs;

  function formatAge(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 90) return s + ' s ago';
    const m = Math.round(s / 60);
    if (m < 90) return m + ' min ago';
    const h = Math.round(m / 60);
    return h < 48 ? h + ' h ago' : Math.round(h / 24) + ' d ago';
  }

  function formatUptime(sec) {
    sec = Math.floor(num(sec));
    if (sec <= 0) return '';
    const d = Math.floor(sec / 86400);
    const h = Math.floor(sec % 86400 / 3600);
    const m = Math.floor(sec % 3600 / 60);
    if (d > 0) return d + ' d ' + h + ' h';
    if (h > 0) return h + ' h ' + m + ' min';
    return m + ' min';
  }

  // The charts: one small SVG line per metric, drawn over the whole window
  // so a gap in the samples shows as a gap in time.
  const SVG = 'http://www.w3.org/2000/svg';
  const CHART_W = 120;
  const CHART_H = 30;
  let history = { window_s: 900, step_s: 5, nodes: {} };
  let historyAt = 0; // when the page last fetched /v1/history (Date.now())

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  // chart draws values (parallel to times, ms) scaled to [lo, hi]; null
  // values break the line.
  function chart(kind, label, times, values, lo, hi, unit) {
    const s = svg('svg', { class: 'spark ' + kind, viewBox: '0 0 ' + CHART_W + ' ' + CHART_H,
      preserveAspectRatio: 'none', role: 'img' });
    const pts = [];
    const nums = values.filter((v) => typeof v === 'number' && isFinite(v));
    const end = agentNow();
    const span = num(history.window_s) * 1000 || 900000;
    const x = (t) => Math.max(0, Math.min(CHART_W, (t - (end - span)) / span * CHART_W));
    const y = (v) => CHART_H - 2 - (Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo || 1) * (CHART_H - 4);
    const lines = [[]];
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (typeof v !== 'number' || !isFinite(v)) { if (lines[lines.length - 1].length) lines.push([]); continue; }
      lines[lines.length - 1].push(x(num(times[i])).toFixed(1) + ',' + y(v).toFixed(1));
    }
    for (const l of lines) {
      if (l.length === 0) continue;
      pts.push(l);
      if (l.length > 1) {
        const first = l[0].split(',')[0];
        const last = l[l.length - 1].split(',')[0];
        s.append(svg('polygon', { class: 'area', points: first + ',' + CHART_H + ' ' + l.join(' ') + ' ' + last + ',' + CHART_H }));
      }
      s.append(svg('polyline', { class: 'line', points: l.join(' '), 'vector-effect': 'non-scaling-stroke' }));
    }
    const last = span < 90000 ? Math.round(span / 1000) + ' s' : Math.round(span / 60000) + ' min';
    const title = svg('title');
    title.textContent = nums.length === 0
      ? label + ': no samples in the last ' + last
      : label + ', last ' + last + ': ' + nums.length + ' samples, min ' + Math.min(...nums).toFixed(1) + unit +
        ', max ' + Math.max(...nums).toFixed(1) + unit;
    s.append(title);
    s.dataset.points = String(nums.length);
    return s;
  }

  // metric fills a cell with its current value and, when history is kept,
  // the chart of its last minutes.
  function metric(td, text, kind, label, h, key, lo, hi, unit) {
    const v = el('span', 'val', text);
    td.append(v);
    if (!h) return td;
    let values = Array.isArray(h[key]) ? h[key] : [];
    let top = hi;
    if (kind === 'load') top = Math.max(hi, ...values.map(num)) * 1.1;
    if (kind === 'temp') {
      const t = values.filter((x) => typeof x === 'number');
      lo = t.length ? Math.min(...t) - 5 : 30;
      top = t.length ? Math.max(...t) + 5 : 80;
    }
    td.append(chart(kind, label, Array.isArray(h.time_ms) ? h.time_ms : [], values, lo, top, unit));
    return td;
  }

  // A node that left cleanly is not an alarm; one that failed is. Both
  // show their last values with the age of that sample.
  function stale(status) {
    return status === 'failed' || status === 'left';
  }

  function row(n) {
    const m = n.monitoring || {};
    const status = String(n.status || 'unknown');
    const h = history.nodes[n.name];
    const tr = el('tr', 'node ' + statusClass(status) + (n.self ? ' self' : '') + (stale(status) ? ' stale' : ''));

    const name = cell('Node', 'name');
    name.append(el('span', 'node-name', n.name));
    if (n.self) name.append(el('span', 'tag', 'this node'));
    const model = n.model || n.arch;
    if (model) name.append(el('span', 'model', model));
    const ip = el('span', 'ip');
    const href = nodeURL(n);
    if (href) {
      const a = el('a', '', n.address);
      a.href = href;
      ip.append(a);
    } else {
      ip.append(n.address || '');
    }
    ip.append(el('span', 'port', ':' + num(n.gossip_port)));
    name.append(ip);
    tr.append(name);

    // Status, suspicion, and how old the figures are (or how long the
    // node has been up).
    const st = cell('Status', 'status');
    st.append(el('span', 'badge ' + statusClass(status), status));
    const threshold = num(n.phi_threshold) > 0 ? num(n.phi_threshold) : 8;
    const phi = num(n.phi);
    const wrap = el('span', 'phi-wrap');
    if (status === 'left') {
      // Nobody watches a node that said goodbye: no red bar for it.
      const t = el('span', 'phi-text', 'left cleanly');
      t.title = 'this node announced it was leaving; its silence is expected';
      wrap.append(t);
    } else {
      const meter = el('meter');
      meter.min = 0;
      meter.max = threshold;
      meter.low = threshold / 2;
      meter.high = threshold * 0.8;
      meter.optimum = 0;
      meter.value = Math.min(phi, threshold);
      wrap.append(meter, el('span', 'phi-text', formatPhi(phi) + ' / ' + threshold));
      wrap.title = 'suspicion φ / threshold';
    }
    st.append(wrap);
    const at = Date.parse(m.sampled_at);
    if (stale(status) && isFinite(at) && at > 0) {
      const age = el('span', 'age', 'values from ' + formatAge(agentNow() - at));
      age.dataset.at = String(at);
      st.append(age);
    } else if (num(m.uptime_s) > 0) {
      st.append(el('span', 'uptime', 'up ' + formatUptime(m.uptime_s)));
    }
    tr.append(st);

    tr.append(metric(cell('CPU', 'num cpu metric'), num(m.cpu_percent).toFixed(0) + ' %',
      'cpu', 'CPU', h, 'cpu_percent', 0, 100, ' %'));
    tr.append(metric(cell('Memory', 'mem metric'),
      num(m.mem_total) > 0 ? formatBytes(m.mem_used) + ' / ' + formatBytes(m.mem_total) : '—',
      'mem', 'Memory used', h, 'mem_percent', 0, 100, ' %'));
    tr.append(metric(cell('Load 1/5/15', 'load metric'),
      [m.load1, m.load5, m.load15].map((v) => num(v).toFixed(2)).join(' / '),
      'load', 'Load (1 min)', h, 'load1', 0, Math.max(1, num(m.cpus)), ''));
    tr.append(metric(cell('Temp', 'num temp metric'),
      typeof m.temp_c === 'number' ? m.temp_c.toFixed(1) + ' °C' : '—',
      'temp', 'Temperature', h && h.temp_c.some((v) => typeof v === 'number') ? h : null, 'temp_c', 0, 100, ' °C'));

    const disk = cell('Disk', 'num disk');
    const used = num(m.disk_used_percent);
    disk.append(el('span', 'val', num(m.disk_used_percent) > 0 ? used.toFixed(0) + ' %' : '—'));
    if (used > 0) {
      const bar = el('meter', 'disk-bar');
      bar.min = 0; bar.max = 100; bar.low = 80; bar.high = 90; bar.optimum = 0; bar.value = used;
      disk.append(bar);
    }
    tr.append(disk);

    const svc = cell('Services', 'services');
    const list = el('span', 'svcs');
    const services = Array.isArray(n.services) ? n.services : [];
    if (services.length === 0) list.append(el('span', 'muted', 'none'));
    for (const s of services) list.append(serviceChip(String(s)));
    svc.append(list);
    tr.append(svc);
    return tr;
  }

  // serviceChip shows a service name whole, letting it wrap after its
  // separators rather than anywhere.
  function serviceChip(name) {
    const chip = el('span', 'svc');
    for (const part of name.split(/(?<=[_.-])/)) {
      if (chip.childNodes.length) chip.append(document.createElement('wbr'));
      chip.append(part);
    }
    return chip;
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

  // Sorting and filtering, applied to every render.
  const STATUS_RANK = { failed: 0, suspect: 1, alive: 2, left: 3 };
  const SORT_KEYS = {
    name: (n) => String(n.name),
    status: (n) => STATUS_RANK[n.status] ?? 4,
    phi: (n) => num(n.phi),
    cpu: (n) => num((n.monitoring || {}).cpu_percent),
    mem: (n) => { const m = n.monitoring || {}; return num(m.mem_total) > 0 ? num(m.mem_used) / num(m.mem_total) : 0; },
    load: (n) => num((n.monitoring || {}).load1),
    temp: (n) => num((n.monitoring || {}).temp_c),
    disk: (n) => num((n.monitoring || {}).disk_used_percent),
    uptime: (n) => num((n.monitoring || {}).uptime_s),
  };
  const view = { sort: 'name', desc: false, status: '', service: '' };
  let lastNodes = [];

  function sorted(nodes) {
    const key = SORT_KEYS[view.sort] || SORT_KEYS.name;
    const dir = view.desc ? -1 : 1;
    return nodes.slice().sort((a, b) => {
      const x = key(a);
      const y = key(b);
      if (x < y) return -dir;
      if (x > y) return dir;
      return String(a.name) < String(b.name) ? -1 : 1;
    });
  }

  function visible(n) {
    if (view.status && n.status !== view.status) return false;
    if (view.service && !(Array.isArray(n.services) && n.services.includes(view.service))) return false;
    return true;
  }

  // renderServiceOptions lists every service any node runs, keeping the
  // chosen one even when no node runs it any more.
  function renderServiceOptions(nodes) {
    const names = new Set();
    for (const n of nodes) for (const s of (Array.isArray(n.services) ? n.services : [])) names.add(String(s));
    if (view.service) names.add(view.service);
    const sel = $('f-service');
    const opts = [Object.assign(el('option', '', 'all services'), { value: '' })];
    for (const s of [...names].sort()) opts.push(Object.assign(el('option', '', s), { value: s }));
    sel.replaceChildren(...opts);
    sel.value = view.service;
  }

  function renderHeaders() {
    for (const th of document.querySelectorAll('th[data-sort]')) {
      const on = th.dataset.sort === view.sort;
      th.setAttribute('aria-sort', on ? (view.desc ? 'descending' : 'ascending') : 'none');
    }
    const pick = $('f-sort');
    pick.value = view.sort + ':' + (view.desc ? 'desc' : 'asc');
    if (pick.selectedIndex < 0) pick.value = '';
  }

  function renderRows() {
    const shown = sorted(lastNodes).filter(visible);
    $('rows').replaceChildren(...shown.map(row));
    const filtered = shown.length !== lastNodes.length;
    $('shown').textContent = filtered ? 'showing ' + shown.length + ' of ' + lastNodes.length : '';
    $('none-shown').hidden = shown.length > 0 || lastNodes.length === 0;
    renderHeaders();
  }

  function render(nodes) {
    if (!Array.isArray(nodes)) throw new Error('unexpected answer from /v1/nodes');
    const self = nodes.find((n) => n.self);
    if (self) {
      $('self').textContent = self.name;
      document.title = 'rpi-cluster · ' + self.name;
    }
    lastNodes = nodes;
    renderCounts(nodes);
    renderServiceOptions(nodes);
    $('alone').hidden = nodes.length > 1;
    renderRows();
    $('updated').textContent = 'updated ' + clock(new Date());
  }

  // setHistory indexes GET /v1/history by node name and takes the agent's
  // clock from it.
  function setHistory(h) {
    if (!h || !Array.isArray(h.nodes)) return;
    const nodes = Object.create(null);
    for (const n of h.nodes) if (n && typeof n.name === 'string' && Array.isArray(n.time_ms)) nodes[n.name] = n;
    history = { window_s: num(h.window_s), step_s: num(h.step_s), nodes };
    const now = Date.parse(h.now);
    if (isFinite(now)) clockSkewMs = now - Date.now();
    const w = num(h.window_s);
    $('history-span').textContent = 'charts: last ' + (w < 90 ? Math.round(w) + ' s' : Math.round(w / 60) + ' min');
  }

  function tickAges() {
    for (const a of document.querySelectorAll('.age[data-at]')) {
      a.textContent = 'values from ' + formatAge(agentNow() - Number(a.dataset.at));
    }
  }

  function setupTools() {
    $('tools').hidden = false;
    for (const th of document.querySelectorAll('th[data-sort]')) {
      const b = el('button', 'sort', th.textContent);
      b.type = 'button';
      b.addEventListener('click', () => {
        if (view.sort === th.dataset.sort) view.desc = !view.desc;
        else { view.sort = th.dataset.sort; view.desc = false; }
        renderRows();
      });
      th.replaceChildren(b);
    }
    $('f-status').addEventListener('change', (e) => { view.status = e.target.value; renderRows(); });
    $('f-service').addEventListener('change', (e) => { view.service = e.target.value; renderRows(); });
    $('f-sort').addEventListener('change', (e) => {
      if (!e.target.value) return;
      const [key, dir] = String(e.target.value).split(':');
      view.sort = key; view.desc = dir === 'desc';
      renderRows();
    });
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
      const nodes = await res.json();
      // The history gains a sample per node per slot (5 s): asking more
      // often than that only costs the Pi a few kB of JSON per node.
      if (Date.now() - historyAt >= Math.max(1000, num(history.step_s) * 1000)) {
        historyAt = Date.now();
        const hist = await fetch('/v1/history', { cache: 'no-store', headers: { Accept: 'application/json' } });
        if (hist.ok) setHistory(await hist.json());
      }
      render(nodes);
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
    setupTools();
    setInterval(tickAges, 1000);
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
