// The agentbus dashboard. Everything it shows comes from the daemon's
// own HTTP API with the session: its cookie (which the page cannot read)
// and its page token (never the instance key). It stays current from the
// event stream, not by polling. Text from the daemon is only ever set as
// text, never parsed as HTML.

// xterm.js adds <style> elements while it runs; the page's policy lets
// in only styles that carry this page's nonce, so they are given it.
const nonce = document.querySelector('meta[name="csp-nonce"]').content;
const makeElement = document.createElement.bind(document);
document.createElement = (tag, options) => {
  const el = makeElement(tag, options);
  if (String(tag).toLowerCase() === 'style') el.setAttribute('nonce', nonce);
  return el;
};
const { Terminal } = await import('/ui/assets/xterm.mjs');

const $ = (sel) => document.querySelector(sel);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An element with text children only. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return e;
}

// The page token: the login's redirect hands it over in the fragment
// (no server sees that); it is kept in this origin's storage, which
// pages on other ports cannot read, and sent with every request.
const TOKEN_KEY = 'agentbus-ui-token';
const handed = new URLSearchParams(location.hash.slice(1)).get('ui_token');
if (handed) {
  localStorage.setItem(TOKEN_KEY, handed);
  history.replaceState(null, '', location.pathname);
}
let token = localStorage.getItem(TOKEN_KEY) || '';

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code || '';
  }
}

/** One call to the daemon, with the page token. */
async function api(method, path, body) {
  const init = { method, headers: { 'X-CSRF-Token': token }, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!r.ok) {
    const e = new ApiError(r.status, json);
    if (r.status === 401 || e.code === 'csrf') loggedOut(e.message);
    throw e;
  }
  return json;
}

const clock = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '-');
function ago(ms) {
  if (!ms) return '-';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

function loggedOut(why) {
  localStorage.removeItem(TOKEN_KEY);
  token = '';
  $('#app').hidden = true;
  $('#logout').hidden = true;
  $('#login').hidden = false;
  $('#login-why').textContent = why || '';
  for (const t of terms.values()) t.close();
}

// ---- tabs

for (const b of document.querySelectorAll('#tabs button')) {
  b.addEventListener('click', () => showTab(b.dataset.tab));
}
function showTab(name) {
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === name);
  for (const s of document.querySelectorAll('section.tab')) s.hidden = s.id !== `tab-${name}`;
  if (name === 'audit') loadAudit();
  if (name === 'status') loadStatus();
}

// ---- agents

/** name → { info, row } */
const agents = new Map();

function stateText(info) {
  if (info.readiness) return info.readiness;
  return info.state;
}

function renderAgent(name) {
  const a = agents.get(name);
  if (!a) return;
  const i = a.info;
  const st = stateText(i);
  const cells = [
    el('td', { class: 'name' }, el('strong', {}, name)),
    el('td', {}, i.provider || '-'),
    el('td', {}, el('span', { class: `state ${st.split(':')[0]}` }, st)),
    el('td', { class: 'activity', 'data-ms': i.last_activity_ms || '' }, ago(i.last_activity_ms)),
    el('td', {}, i.pid ?? '-'),
    el('td', {}, el('span', { class: `badge${i.held_jekts ? ' some' : ''}` }, i.held_jekts ?? 0)),
    el('td', {}, el('span', { class: `badge${i.unread_mail ? ' some' : ''}` }, i.unread_mail ?? 0)),
    el('td', {}, el('button', { type: 'button', class: 'watch', onclick: (e) => { e.stopPropagation(); watch(name); } }, 'terminal')),
  ];
  const row = a.row || el('tr', { 'data-agent': name, onclick: () => watch(name) });
  row.replaceChildren(...cells);
  row.classList.toggle('watching', terms.has(name));
  if (!a.row) {
    a.row = row;
    const rows = [...$('#agents tbody').children];
    const after = rows.find((r) => r.dataset.agent > name);
    $('#agents tbody').insertBefore(row, after || null);
  }
}

function setAgent(info) {
  const name = info.agent_id;
  const a = agents.get(name) || {};
  a.info = { ...(a.info || {}), ...info };
  agents.set(name, a);
  renderAgent(name);
  agentsChanged();
}

function dropAgent(name) {
  const a = agents.get(name);
  if (a?.row) a.row.remove();
  agents.delete(name);
  agentsChanged();
}

function agentsChanged() {
  $('#no-agents').hidden = agents.size > 0;
  const list = $('#agent-names');
  list.replaceChildren(...[...agents.keys()].sort().map((n) => el('option', { value: n })));
}

async function loadAgents() {
  const { agents: list } = await api('GET', '/v1/agents');
  const names = new Set(list.map((a) => a.agent_id));
  for (const name of [...agents.keys()]) if (!names.has(name)) dropAgent(name);
  for (const info of list) setAgent(info);
}

async function refreshAgent(name) {
  try {
    setAgent(await api('GET', `/v1/agents/${encodeURIComponent(name)}`));
  } catch (e) {
    if (e.status === 404) dropAgent(name);
  }
}

// Only the words "3s ago" change with time; the data does not.
setInterval(() => {
  for (const td of document.querySelectorAll('#agents td.activity')) {
    td.textContent = ago(Number(td.dataset.ms) || 0);
  }
}, 1000);

// ---- terminals

/** name → watcher */
const terms = new Map();

class Watcher {
  constructor(name) {
    this.name = name;
    this.typing = false;
    const info = agents.get(name)?.info || {};
    this.mode = el('span', { class: 'mode' }, 'view only');
    this.toggle = el('input', { type: 'checkbox', class: 'type-switch' });
    this.toggle.addEventListener('change', () => this.setTyping(this.toggle.checked));
    this.box = el('div', { class: 'xterm-host' });
    this.panel = el('div', { class: 'term', 'data-agent': name },
      el('div', { class: 'bar' },
        el('span', { class: 'name' }, name),
        el('label', { class: 'inline' }, this.toggle, 'type into this pane'),
        this.mode,
        el('button', { type: 'button', class: 'close', onclick: () => this.close() }, 'close')),
      this.box);
    $('#terms').append(this.panel);
    this.term = new Terminal({
      rows: info.rows || 24,
      cols: info.cols || 80,
      fontSize: 12,
      fontFamily: '"DejaVu Sans Mono", ui-monospace, monospace',
      scrollback: 2000,
      disableStdin: true,
      cursorBlink: false,
    });
    this.term.open(this.box);
    const enc = new TextEncoder();
    this.term.onData((d) => this.send(enc.encode(d)));
    this.term.onBinary((d) => this.send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 255)));
    this.connect();
  }

  send(bytes) {
    if (this.typing && this.ws?.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  connect() {
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
    }
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // A WebSocket cannot carry headers: the token rides in the query,
    // which the daemon takes out before the route sees it.
    const url = `${proto}//${location.host}/v1/agents/${encodeURIComponent(this.name)}/attach?input=${this.typing}&ui_token=${encodeURIComponent(token)}`;
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let first = true;
    ws.onmessage = (m) => {
      if (typeof m.data === 'string') {
        let c = {};
        try { c = JSON.parse(m.data); } catch { /* not control */ }
        if (c.type === 'exit') this.term.write(`\r\n\x1b[2m[the program exited${c.exit_code != null ? ` with ${c.exit_code}` : ''}]\x1b[0m\r\n`);
        if (c.type === 'shutdown') this.term.write('\r\n\x1b[2m[the daemon is shutting down]\x1b[0m\r\n');
        return;
      }
      if (first) {
        // The first frame repaints the whole screen.
        this.term.reset();
        first = false;
      }
      this.term.write(new Uint8Array(m.data));
    };
    ws.onclose = () => {
      if (this.ws === ws) this.mode.textContent = 'disconnected';
    };
  }

  setTyping(on) {
    this.typing = on;
    this.term.options.disableStdin = !on;
    this.mode.textContent = on ? 'TYPING' : 'view only';
    this.mode.classList.toggle('typing', on);
    this.connect();
    if (on) this.term.focus();
  }

  close() {
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
    }
    this.term.dispose();
    this.panel.remove();
    terms.delete(this.name);
    if (agents.has(this.name)) renderAgent(this.name);
  }
}

function watch(name) {
  if (!terms.has(name)) terms.set(name, new Watcher(name));
  renderAgent(name);
  terms.get(name).panel.scrollIntoView({ block: 'nearest' });
}

// ---- talk

function result(out, ok, text) {
  out.className = `result ${ok ? 'ok' : 'bad'}`;
  out.textContent = text;
}

$('#jekt-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const out = $('#jekt-result');
  const body = {
    target_agent: f.to.value.trim(),
    message: f.message.value,
    priority: f.priority.value,
    tier: f.tier.value,
    wait_for_idle: f.wait.checked,
  };
  if (f.from.value.trim()) body.source_agent = f.from.value.trim();
  result(out, true, 'sending...');
  try {
    const r = await api('POST', '/agentmux/reactive/inject', body);
    const parts = [`${r.outcome} → ${r.target_agent}`, `trust ${r.trust}`, `tier ${r.tier}`, `via ${r.delivery}`];
    if (r.submitted) parts.push(`submit ${r.submitted}`);
    if (r.reason) parts.push(`reason: ${r.reason}`);
    if (r.waited_ms) parts.push(`waited ${r.waited_ms} ms`);
    if (r.duplicate) parts.push('duplicate');
    result(out, true, `${parts.join(' · ')}\nid ${r.msg_id}`);
    out.dataset.outcome = r.outcome;
  } catch (e) {
    result(out, false, `${e.code ? `${e.code}: ` : ''}${e.message}`);
    out.dataset.outcome = 'error';
  }
});

$('#mail-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const out = $('#mail-result');
  const body = { to: f.to.value.trim(), body: f.body.value, priority: f.priority.value };
  if (f.from.value.trim()) body.from = f.from.value.trim();
  if (f.thread.value.trim()) body.thread_id = f.thread.value.trim();
  result(out, true, 'sending...');
  try {
    const r = await api('POST', '/v1/messages', body);
    const parts = [`accepted for ${r.to} (#${r.seq})`, `from ${r.from}`];
    if (!r.recipient_known) parts.push('no such agent yet: it waits in the mailbox');
    if (r.duplicate) parts.push('duplicate');
    for (const k of ['delivery', 'outcome', 'trust']) if (r[k]) parts.push(`${k} ${r[k]}`);
    result(out, true, `${parts.join(' · ')}\nid ${r.id}`);
    out.dataset.outcome = 'accepted';
  } catch (e) {
    result(out, false, `${e.code ? `${e.code}: ` : ''}${e.message}`);
    out.dataset.outcome = 'error';
  }
});

// ---- mail

function renderMessages(title, messages) {
  $('#mail-title').textContent = title;
  const threads = new Map();
  for (const m of messages) {
    const key = m.thread_id || m.id;
    if (!threads.has(key)) threads.set(key, []);
    threads.get(key).push(m);
  }
  const blocks = [];
  for (const [key, list] of threads) {
    list.sort((a, b) => a.seq - b.seq);
    const head = list[0].thread_id ? `thread ${key} · ${list.length} message${list.length > 1 ? 's' : ''}` : 'no thread';
    blocks.push(el('div', { class: 'thread', 'data-thread': key },
      el('h3', {}, head),
      ...list.map((m) => el('div', { class: `msg${m.reply_to ? ' reply' : ''}`, 'data-id': m.id },
        el('div', { class: 'head' },
          `#${m.seq} · ${clock(m.created_ms)} · ${m.from} → ${m.to} · ${m.trust} · ${m.priority} · ${m.state}`),
        el('div', { class: 'body' }, m.body)))));
  }
  $('#threads').replaceChildren(...blocks);
}

$('#mailbox-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const agent = f.agent.value.trim();
  const q = new URLSearchParams({ peek: 'true', limit: '1000', include_acked: String(f.acked.checked) });
  try {
    const page = await api('GET', `/v1/inbox/${encodeURIComponent(agent)}?${q}`);
    renderMessages(`${agent}'s mailbox: ${page.messages.length} message(s)${page.more ? ' (more beyond)' : ''}`, page.messages);
  } catch (e) {
    renderMessages(`${agent}: ${e.message}`, []);
  }
});

$('#search-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const q = new URLSearchParams({ q: f.q.value, limit: '200' });
  if (f.agent.value.trim()) q.set('agent', f.agent.value.trim());
  try {
    const r = await api('GET', `/v1/search?${q}`);
    renderMessages(`${r.messages.length} message(s) match “${f.q.value}”`, r.messages);
  } catch (e) {
    renderMessages(`search: ${e.message}`, []);
  }
});

// ---- events

const MAX_EVENTS = 500;

function eventShown(e) {
  const f = $('#events-filter');
  if (e.type === 'agent:state' && !f.states.checked) return false;
  const t = f.type.value.trim();
  if (t && !e.type.includes(t)) return false;
  const a = f.agent.value.trim();
  if (a && !(e.scopes || []).includes(`agent:${a}`)) return false;
  return true;
}

const eventLog = [];

function eventRow(e) {
  const tr = el('tr', { 'data-type': e.type },
    el('td', {}, clock(e.ts_ms)),
    el('td', {}, e.type),
    el('td', {}, (e.scopes || []).join(' ')),
    el('td', { class: 'data' }, JSON.stringify(e.data ?? {})));
  tr.hidden = !eventShown(e);
  tr.eventRef = e;
  return tr;
}

function logEvent(e) {
  eventLog.push(e);
  const body = $('#events tbody');
  body.prepend(eventRow(e));
  if (eventLog.length > MAX_EVENTS) {
    eventLog.shift();
    body.lastElementChild?.remove();
  }
}

function refilter() {
  for (const tr of $('#events tbody').children) tr.hidden = !eventShown(tr.eventRef);
}
$('#events-filter').addEventListener('input', refilter);
$('#events-filter').addEventListener('submit', (ev) => ev.preventDefault());
$('#events-clear').addEventListener('click', () => {
  eventLog.length = 0;
  $('#events tbody').replaceChildren();
});

/** Which agent an event is about. */
function agentOf(e) {
  const s = (e.scopes || []).find((x) => x.startsWith('agent:'));
  return s ? s.slice('agent:'.length) : null;
}

function onEvent(e) {
  if (e.type === 'subscribed' || e.type === 'heartbeat') return;
  if (e.type === 'lagged') {
    loadAgents().catch(() => {});
    return;
  }
  logEvent(e);
  const name = agentOf(e);
  if (!name) return;
  if (e.type === 'agent:state') {
    if (agents.has(name)) setAgent({ agent_id: name, ...e.data });
    else refreshAgent(name);
  } else if (e.type === 'agent:unregistered') {
    dropAgent(name);
  } else if (/^(agent|block|jekt|message):/.test(e.type)) {
    refreshAgent(name);
  }
}

function setLive(on) {
  const b = $('#live');
  b.className = `live ${on ? 'on' : 'off'}`;
  b.textContent = on ? 'live' : 'offline';
}

async function stream() {
  for (;;) {
    try {
      const r = await fetch('/v1/events/stream', { headers: { 'X-CSRF-Token': token }, credentials: 'same-origin', cache: 'no-store' });
      if (r.status === 401 || r.status === 403) {
        loggedOut('The session has ended.');
        return;
      }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      setLive(true);
      await loadAgents();
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.trim()) {
            try { onEvent(JSON.parse(line)); } catch (err) { console.error(err); }
          }
        }
      }
    } catch (err) {
      console.warn('event stream', err);
    }
    setLive(false);
    if ($('#app').hidden) return;
    await sleep(2000);
  }
}

// ---- audit

async function loadAudit() {
  const f = $('#audit-form');
  const q = new URLSearchParams({ limit: f.limit.value || '200' });
  if (f.agent.value.trim()) q.set('agent', f.agent.value.trim());
  if (f.kind.value.trim()) q.set('kind', f.kind.value.trim());
  if (f.since.value) q.set('since_ms', String(Date.now() - Number(f.since.value) * 60_000));
  const body = $('#audit tbody');
  try {
    const { entries } = await api('GET', `/v1/audit?${q}`);
    body.replaceChildren(...entries.map((e) => el('tr', { 'data-kind': e.kind },
      el('td', {}, clock(e.ts_ms)),
      el('td', {}, e.actor),
      el('td', {}, e.kind),
      el('td', {}, e.target ?? '-'),
      el('td', {}, e.outcome),
      el('td', {}, e.body_len ?? '-'),
      el('td', {}, e.detail ?? ''))));
  } catch (e) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: '7' }, e.message)));
  }
}
$('#audit-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  loadAudit();
});

// ---- status

function kv(table, obj, prefix = '') {
  const rows = [];
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      rows.push(...kv(null, v, `${prefix}${k}.`));
    } else {
      rows.push(el('tr', {}, el('td', {}, `${prefix}${k}`), el('td', {}, Array.isArray(v) ? v.join(', ') : v ?? '-')));
    }
  }
  if (table) table.replaceChildren(...rows);
  return rows;
}

async function loadStatus() {
  const show = async (sel, path) => {
    try { kv($(sel), await api('GET', path)); } catch (e) { $(sel).replaceChildren(el('tr', {}, el('td', {}, e.message))); }
  };
  await Promise.all([
    show('#poller', '/agentmux/reactive/poller/status'),
    show('#poller-stats', '/agentmux/reactive/poller/stats'),
    show('#stats', '/v1/stats'),
  ]);
}
$('#status-refresh').addEventListener('click', loadStatus);

// ---- start

$('#logout').addEventListener('click', async () => {
  try { await api('POST', '/ui/logout'); } catch { /* ended already */ }
  loggedOut('You logged out.');
});

async function start() {
  let session;
  if (!token) {
    loggedOut('');
    return;
  }
  try {
    session = await api('GET', '/ui/session');
  } catch (e) {
    loggedOut(e.status === 401 ? '' : e.message);
    return;
  }
  $('#who').textContent = `session ${session.session} · until ${new Date(session.expires_ms).toLocaleString()}`;
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#logout').hidden = false;
  document.body.dataset.ready = 'true';
  stream();
}

start();
