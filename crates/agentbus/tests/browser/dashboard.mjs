// Drives the dashboard in headless Chromium (Debian's, through
// playwright-core) against a real daemon that tests/dashboard.rs started,
// and prints a JSON report as its last line. Every step that fails
// throws, with what it saw.
//
// Input (env DASHBOARD_TEST, JSON): url, link (a one-time login link),
// key (the instance key: used here outside the page only, and looked for
// in every request the page makes), sink (the file alice's pane writes
// what it is typed), shots (a directory for screen shots), chromium
// (the browser's path), playwright (where playwright-core is installed).

import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import http from 'node:http';

const cfg = JSON.parse(process.env.DASHBOARD_TEST);
const { chromium } = createRequire(`${cfg.playwright}/`)('playwright-core');
const report = {};
const step = (name) => console.error(`-- ${name}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const word = (p) => `${p}${Math.random().toString(36).slice(2, 10)}`;

function fail(msg) {
  throw new Error(msg);
}

/** A call to the daemon from this harness (not from the page). */
async function admin(method, path, body) {
  const r = await fetch(cfg.url + path, {
    method,
    headers: { 'X-AuthKey': cfg.key, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json().catch(() => null);
  return { status: r.status, json };
}

const sinkText = () => (existsSync(cfg.sink) ? readFileSync(cfg.sink, 'latin1') : '');

async function until(what, fn, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) fail(`timed out: ${what}`);
    await sleep(50);
  }
}

/** A page on another loopback origin that tries to use the session. */
function otherOrigin() {
  const daemon = cfg.url;
  const wsUrl = daemon.replace('http:', 'ws:');
  const html = `<!doctype html><meta charset="utf-8"><pre id="out">pending</pre><script>
(async () => {
  const r = {};
  try { const x = await fetch(${JSON.stringify(daemon)} + '/v1/agents', { credentials: 'include' }); r.read = 'status ' + x.status; }
  catch (e) { r.read = 'blocked'; }
  try { const x = await fetch(${JSON.stringify(daemon)} + '/ui/session', { credentials: 'include' }); r.session = 'status ' + x.status; }
  catch (e) { r.session = 'blocked'; }
  try {
    await fetch(${JSON.stringify(daemon)} + '/v1/messages', { method: 'POST', mode: 'no-cors', credentials: 'include',
      headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ to: 'bob', body: 'crossoriginpost' }) });
    r.post = 'sent';
  } catch (e) { r.post = 'blocked'; }
  try {
    await fetch(${JSON.stringify(daemon)} + '/agentmux/reactive/inject', { method: 'POST', mode: 'no-cors', credentials: 'include',
      headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ target_agent: 'alice', message: 'crossoriginjekt' }) });
    r.jekt = 'sent';
  } catch (e) { r.jekt = 'blocked'; }
  r.ws = await new Promise((done) => {
    const ws = new WebSocket(${JSON.stringify(wsUrl)} + '/v1/agents/alice/attach?input=true');
    ws.onopen = () => { ws.send(new TextEncoder().encode('crossoriginkeys\\r')); setTimeout(() => done('open'), 300); };
    ws.onerror = () => done('refused');
  });
  document.getElementById('out').textContent = JSON.stringify(r);
})();
</script>`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(html);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/` }));
  });
}

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  // Every request and WebSocket the dashboard's pages make, with headers.
  const requests = [];
  context.on('request', async (r) => {
    requests.push({ url: r.url(), headers: await r.allHeaders().catch(() => r.headers()) });
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('websocket', (ws) => requests.push({ url: ws.url(), headers: {} }));

  step('log in through the one-time link');
  const first = await page.goto(cfg.link);
  if (new URL(page.url()).pathname !== '/') fail(`the link led to ${page.url()} (${first?.status()})`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 10_000 });
  const cookies = await context.cookies(cfg.url);
  const session = cookies.find((c) => c.name.startsWith('agentbus_ui_'));
  if (!session) fail(`no session cookie: ${JSON.stringify(cookies)}`);
  report.cookie = { httpOnly: session.httpOnly, sameSite: session.sameSite, path: session.path };
  report.page_cookie = await page.evaluate(() => document.cookie);
  report.url_after_login = page.url();
  report.token_stored = await page.evaluate(() => (localStorage.getItem('agentbus-ui-token') || '').length);
  const me = await page.evaluate(async () => (await fetch('/ui/session', { headers: { 'X-CSRF-Token': localStorage.getItem('agentbus-ui-token') } })).json());
  report.session = me.session;

  step('a second use of the link fails');
  const other = await browser.newContext();
  const again = await (await other.newPage()).goto(cfg.link);
  report.second_use_status = again.status();
  report.second_use_cookies = (await other.cookies(cfg.url)).length;
  await other.close();

  step('two agents are listed');
  await page.waitForSelector('#agents tr[data-agent="alice"]');
  await page.waitForSelector('#agents tr[data-agent="bob"]');
  report.agents = await page.$$eval('#agents tbody tr', (rows) => rows.map((r) => r.dataset.agent));
  report.alice_row = await page.$eval('#agents tr[data-agent="alice"]', (r) => [...r.cells].map((c) => c.textContent));

  step("bob's pane output reaches the terminal view");
  await page.click('#agents tr[data-agent="bob"]');
  const bobRows = '.term[data-agent="bob"] .xterm-rows';
  await page.waitForSelector(bobRows);
  await sleep(500);
  const ping = word('ping');
  const sent = await admin('POST', '/agentmux/reactive/inject', { target_agent: 'bob', message: ping });
  if (sent.status !== 200 || sent.json.outcome !== 'delivered') fail(`jekt to bob: ${JSON.stringify(sent)}`);
  const printed = Date.now();
  await page.waitForFunction(
    ([sel, w]) => document.querySelector(sel)?.textContent.includes(w),
    [bobRows, ping],
    { timeout: 5_000, polling: 'raf' },
  );
  report.output_ms = Date.now() - printed;

  step('the read-only view does not type');
  await page.click('#agents tr[data-agent="alice"]');
  const aliceTerm = '.term[data-agent="alice"]';
  await page.waitForSelector(`${aliceTerm} .xterm-rows`);
  await sleep(300);
  await page.click(`${aliceTerm} .xterm-screen`);
  await page.keyboard.type('readonlykeys');
  await page.keyboard.press('Enter');
  await sleep(1_000);
  report.readonly_typed = sinkText().includes('readonlykeys');

  step('the typing switch types, and is audited');
  await page.check(`${aliceTerm} input.type-switch`);
  await page.waitForFunction((sel) => document.querySelector(`${sel} .mode`).textContent === 'TYPING', aliceTerm);
  await sleep(700);
  await page.click(`${aliceTerm} .xterm-screen`);
  await page.keyboard.type('typedinui');
  await page.keyboard.press('Enter');
  await until('typed keys reach the pane', () => sinkText().includes('typedinui'));
  report.typing_typed = true;
  await page.uncheck(`${aliceTerm} input.type-switch`);
  const actor = `ui:${me.session}`;
  report.typing_audit = await until('the typing is audited', async () => {
    const { json } = await admin('GET', '/v1/audit?agent=alice&limit=100');
    const attach = json.entries.find((e) => e.kind === 'attach' && e.actor === actor && e.detail === 'typing');
    const typed = json.entries.find((e) => e.kind === 'type' && e.actor === actor);
    return attach && typed ? { attach: attach.detail, type: typed.detail } : null;
  });

  step('a jekt from the form reaches a pane');
  const jektWord = word('formjekt');
  await page.fill('#jekt-form [name=to]', 'alice');
  await page.fill('#jekt-form [name=message]', `please look at ${jektWord}`);
  await page.selectOption('#jekt-form [name=priority]', 'high');
  await page.click('#jekt-form button[type=submit]');
  await page.waitForSelector('#jekt-result[data-outcome]');
  report.jekt_outcome = await page.$eval('#jekt-result', (o) => ({ outcome: o.dataset.outcome, text: o.textContent }));
  await until('the jekt from the form reaches alice', () => sinkText().includes(jektWord));
  report.jekt_reached = true;

  step('a message appears in the mailbox view, and search finds it');
  const mailWord = word('mailword');
  await page.fill('#mail-form [name=to]', 'bob');
  await page.fill('#mail-form [name=thread]', 'release-7');
  await page.fill('#mail-form [name=body]', `notes for the release: ${mailWord}`);
  await page.click('#mail-form button[type=submit]');
  await page.waitForSelector('#mail-result[data-outcome]');
  report.mail_outcome = await page.$eval('#mail-result', (o) => ({ outcome: o.dataset.outcome, text: o.textContent }));
  // The agents list learns of the unread message from the event stream.
  await page.waitForFunction(() => document.querySelector('#agents tr[data-agent="bob"]').cells[6].textContent === '1', null, { timeout: 10_000 });
  report.unread_live = true;
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${cfg.shots}/dashboard.png` });
  await page.click('#tabs button[data-tab="mail"]');
  await page.fill('#mailbox-form [name=agent]', 'bob');
  await page.click('#mailbox-form button[type=submit]');
  await page.waitForSelector('#threads .thread[data-thread="release-7"] .msg');
  report.mailbox_bodies = await page.$$eval('#threads .msg .body', (b) => b.map((x) => x.textContent));
  await page.fill('#search-form [name=q]', mailWord);
  await page.click('#search-form button[type=submit]');
  await page.waitForFunction((w) => document.querySelector('#mail-title').textContent.includes(w), mailWord);
  report.search_bodies = await page.$$eval('#threads .msg .body', (b) => b.map((x) => x.textContent));
  await page.screenshot({ path: `${cfg.shots}/dashboard-mail.png` });

  step('the event stream and the audit log, with filters');
  await page.click('#tabs button[data-tab="events"]');
  await page.waitForSelector('#events tr[data-type="jekt:delivered"]');
  await page.fill('#events-filter [name=type]', 'message:');
  report.events_shown = await page.$$eval('#events tbody tr:not([hidden])', (r) => r.map((x) => x.dataset.type));
  await page.click('#tabs button[data-tab="audit"]');
  await page.fill('#audit-form [name=kind]', 'type');
  await page.click('#audit-form button[type=submit]');
  await page.waitForSelector('#audit tbody tr[data-kind="type"]');
  report.audit_kinds = await page.$$eval('#audit tbody tr', (r) => r.map((x) => x.dataset.kind));
  await page.click('#tabs button[data-tab="status"]');
  await page.waitForFunction(() => document.querySelectorAll('#stats tr').length > 3);
  report.status_rows = await page.$$eval('#stats tr td:first-child', (r) => r.map((x) => x.textContent));

  step('a page on another origin cannot use the session');
  const { server, url: otherUrl } = await otherOrigin();
  const evil = await context.newPage();
  await evil.goto(otherUrl);
  await evil.waitForFunction(() => document.getElementById('out').textContent !== 'pending', null, { timeout: 10_000 });
  report.cross_origin = JSON.parse(await evil.$eval('#out', (o) => o.textContent));
  await evil.close();
  server.close();
  await sleep(500);
  const { json: found } = await admin('GET', '/v1/search?q=crossoriginpost');
  report.cross_origin_mail = found.messages.length;
  report.cross_origin_jekt = sinkText().includes('crossoriginjekt');
  report.cross_origin_keys = sinkText().includes('crossoriginkeys');

  step('no request of the page carries the instance key');
  report.requests = requests.length;
  report.key_seen = requests.filter((r) => r.url.includes(cfg.key) || Object.values(r.headers).some((v) => String(v).includes(cfg.key))).map((r) => r.url);
  report.dashboard_requests_with_csrf = requests.filter((r) => r.url.startsWith(cfg.url) && r.headers['x-csrf-token']).length;

  step('log out');
  await page.click('#tabs button[data-tab="agents"]');
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])');
  report.after_logout = await page.evaluate(async () => (await fetch('/ui/session', { headers: { 'X-CSRF-Token': 'x' } })).status);
  report.token_after_logout = await page.evaluate(() => localStorage.getItem('agentbus-ui-token'));
  report.page_errors = errors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
