// browser.test.mjs: end-to-end tests of the browser client (web/) in real
// Chromium (Debian's /usr/bin/chromium, driven by npm's playwright-core,
// headless, kept off the network), against a real sori started here on a
// loopback port. Two browser contexts are two people: they sign up, create
// and join a room, chat both ways, see typing and unread/mention badges,
// send an image, start direct messages by name, invite to a private room,
// page back through history, live through a server restart without losing or doubling a
// message, and see HTML in a message as text. A screenshot of the main view
// is saved to tests/e2e/artifacts/main.png.
//
// Run: node --test tests/e2e/   (SORI_BIN selects the binary, default build/sori)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { chromium } from '../node/node_modules/playwright-core/index.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.resolve(ROOT, process.env.SORI_BIN || 'build/sori');
const SLOW = /\/(asan|tsan)\//.test(BIN) ? 3 : 1;
const T = 10000 * SLOW;
const ARTIFACTS = path.join(ROOT, 'tests/e2e/artifacts');

// SORI_TEST_TLS=1: the server speaks TLS (--tls-cert, a self-signed
// certificate made here) and the pages load over https://, so the client
// connects with wss:// (the browser trusts nothing: ignoreHTTPSErrors).
const TLS = process.env.SORI_TEST_TLS === '1';
let tlsArgs = [];
let server = null;
let port = 0;
let dataDir = '';
let browser = null;
let uniq = 0;
const name = (base) => `${base}${process.pid % 1000}x${++uniq}`;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
    s.on('error', reject);
  });
}

function startServer() {
  return new Promise((resolve, reject) => {
    const p = spawn(BIN, ['serve', '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir,
                          '--web-dir', path.join(ROOT, 'web'), '--workers', '2',
                          '--signup-rate-ip', '1000', '--login-rate-ip', '1000', ...tlsArgs],
                    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SORI_SECRET: 'e2e-secret-'.padEnd(40, 'x') } });
    let out = '';
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => reject(new Error('sori did not start: ' + err)), T);
    p.stdout.on('data', (d) => {
      out += d;
      if (out.includes(TLS ? 'serving https://' : 'serving http://')) {
        clearTimeout(timer);
        p.stderrText = () => err;
        resolve(p);
      }
    });
    p.on('exit', (code) => { clearTimeout(timer); if (!out.includes('serving')) reject(new Error(`sori exited ${code}: ${err}`)); });
  });
}

function stopServer(p) {
  return new Promise((resolve) => {
    if (!p || p.exitCode !== null) return resolve(p && p.exitCode);
    const t = setTimeout(() => p.kill('SIGKILL'), T);
    p.on('exit', (code) => { clearTimeout(t); resolve(code); });
    p.kill('SIGTERM');
  });
}

before(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'sori-e2e-'));
  if (TLS) {
    const cert = path.join(dataDir, 'tls.crt');
    const key = path.join(dataDir, 'tls.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                             '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1',
                             '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    tlsArgs = ['--tls-cert', cert, '--tls-key', key];
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0'; // this file's own fetch() calls, to 127.0.0.1 only
  }
  port = await freePort();
  server = await startServer();
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-sync',
           '--disable-background-networking', '--disable-component-update', '--disable-default-apps',
           '--disable-extensions', '--disable-domain-reliability', '--no-pings', '--metrics-recording-only',
           '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  });
});

after(async () => {
  if (browser) await browser.close();
  const code = await stopServer(server);
  const err = server ? server.stderrText() : '';
  rmSync(dataDir, { recursive: true, force: true });
  assert.ok(!/AddressSanitizer|ThreadSanitizer|runtime error:/.test(err), 'sanitizer report:\n' + err.slice(-4000));
  assert.equal(code, 0, 'sori exit code');
});

const url = () => `${TLS ? 'https' : 'http'}://127.0.0.1:${port}/`;

// A person: a browser context with its own storage, signed up under `who`.
async function person(who) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: TLS, viewport: { width: 1100, height: 720 } });
  const page = await ctx.newPage();
  page.alerts = [];
  page.on('dialog', (d) => { page.alerts.push(d.message()); d.dismiss(); });
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(url());
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByLabel('Name', { exact: true }).fill(who);
  await page.getByLabel('Password', { exact: true }).fill('correct horse battery');
  await page.locator('#auth-submit').click();
  await page.locator('#conn-state[data-state=online]').waitFor({ timeout: T });
  page.who = who;
  return page;
}

async function createRoom(page, id, kind = 'public') {
  await page.getByRole('button', { name: 'New room' }).click();
  await page.getByLabel('Room id').fill(id);
  if (kind === 'private') await page.getByLabel(/Private/).check();
  await page.locator('#room-create').click();
  await page.locator('#room-title', { hasText: id }).waitFor({ timeout: T });
}

async function joinRoom(page, id) {
  await page.getByRole('button', { name: 'Browse rooms' }).click();
  await page.locator(`[data-join="${id}"]`).click();
  await page.locator('#room-title', { hasText: id }).waitFor({ timeout: T });
}

// Two people in a new public room: a created it, b joined from the directory.
async function pair(x, y, r) {
  const a = await person(name(x));
  const b = await person(name(y));
  const room = name(r);
  await createRoom(a, room);
  await joinRoom(b, room);
  return [a, b, room];
}

async function closeAll(...pages) {
  for (const p of pages) await p.context().close();
}

async function send(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
}

const texts = (page) => page.locator('#messages li.msg:not(.pending) .text').allTextContents();

async function waitTexts(page, want) {
  const deadline = Date.now() + T;
  let got;
  while (Date.now() < deadline) {
    got = await texts(page);
    if (JSON.stringify(got.slice(-want.length)) === JSON.stringify(want)) return got;
    await page.waitForTimeout(50);
  }
  assert.deepEqual(got.slice(-want.length), want);
  return got;
}

const badge = (page, room, kind) => page.locator(`.room-item[data-room="${room}"] [data-badge=${kind}]`);

test('two people chat both ways, with typing, unread and mention badges', async () => {
  const [a, b, room] = await pair('alice', 'bob', 'lobby');
  await send(a, 'hi bob');
  await waitTexts(b, ['hi bob']);
  await send(b, 'hi alice\nsecond line');   // Shift+Enter is a new line; fill() puts one directly
  await waitTexts(a, ['hi bob', 'hi alice\nsecond line']);
  // own messages: pending until acked, then shown once
  assert.equal(await a.locator('#messages li.msg.pending').count(), 0);
  // Shift+Enter makes a new line rather than sending
  await b.locator('#text').fill('');
  await b.waitForTimeout(1100); // the server passes on one typing event per second
  await b.locator('#text').type('line one');
  await b.locator('#text').press('Shift+Enter');
  await b.locator('#text').type('line two');
  assert.equal(await b.locator('#text').inputValue(), 'line one\nline two');
  // typing shows on the other side
  await a.locator('#typing', { hasText: `${b.who} is typing` }).waitFor({ timeout: T });
  await b.locator('#text').press('Enter');
  await waitTexts(a, ['line one\nline two']);
  // a's view is elsewhere: b's messages count as unread, a mention as a mention
  const other = name('side');
  await createRoom(a, other);
  await send(b, 'are you there?');
  await send(b, `@${a.who} look at this`);
  await badge(a, room, 'unread').filter({ hasText: '2' }).waitFor({ timeout: T });
  await badge(a, room, 'mentions').filter({ hasText: '@1' }).waitFor({ timeout: T });
  // opening the room reads it: the badges go, the mention is highlighted
  await a.locator(`.room-item[data-room="${room}"]`).click();
  await a.locator('mark.mention.me', { hasText: '@' + a.who }).waitFor({ timeout: T });
  await badge(a, room, 'unread').waitFor({ state: 'detached', timeout: T });
  // the read marker reached the server: a fresh page of a starts with no unread
  const a2 = await a.context().newPage();
  await a2.goto(url());
  await a2.locator('#conn-state[data-state=online]').waitFor({ timeout: T });
  await a2.locator(`.room-item[data-room="${room}"]`).waitFor({ timeout: T });
  await a2.waitForTimeout(300);
  assert.equal(await badge(a2, room, 'unread').count(), 0);
  // day separator and times are there
  assert.ok(await a.locator('#messages li.day').count() >= 1);
  assert.ok(await a.locator('#messages li.msg time').count() >= 4);
  mkdirSync(ARTIFACTS, { recursive: true });
  await a.screenshot({ path: path.join(ARTIFACTS, 'main.png') });
  assert.deepEqual(a.alerts, []);
  assert.deepEqual([...a.errors, ...b.errors], []);
  await closeAll(a, b);
});

// A 2x2 PNG, made here (no binary fixture).
function png() {
  const crc = (buf) => {
    let c = ~0;
    for (const x of buf) { c ^= x; for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1)); }
    return ~c >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(2, 0); ihdr.writeUInt32BE(2, 4); ihdr[8] = 8; ihdr[9] = 2;
  const raw = Buffer.from([0, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 0]);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
                        chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

test('images sent by button, drop and paste show inline on the other side', async () => {
  const [a, b, room] = await pair('ann', 'ben', 'pics');
  await a.locator('#text').fill('a red square');
  await a.locator('#file').setInputFiles({ name: 'square.png', mimeType: 'image/png', buffer: png() });
  await waitTexts(b, ['a red square']);
  const img = b.locator('#messages li.msg img.image').last();
  await img.waitFor({ timeout: T });
  await b.waitForFunction((el) => el.complete && el.naturalWidth === 2, await img.elementHandle(), { timeout: T });
  // dropped on the message view, and pasted into the composer
  const b64 = png().toString('base64');
  await a.evaluate((data) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
    document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, b64);
  await waitTexts(b, ['dropped.png']);
  await a.evaluate((data) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'pasted.png', { type: 'image/png' }));
    document.getElementById('text').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
  }, b64);
  await waitTexts(b, ['dropped.png', 'pasted.png']);
  assert.equal(await b.locator('#messages li.msg img.image').count(), 3);
  await closeAll(a, b);
});

test('a message with HTML in it is shown as text', async () => {
  const [a, b, room] = await pair('eve', 'vic', 'xss');
  const evil = '<img src=x onerror=alert(1)>';
  await send(a, evil);
  await waitTexts(b, [evil]);
  assert.equal(await b.locator('#messages li.msg .text img').count(), 0);
  assert.equal(await b.locator('#messages img:not(.image)').count(), 0);
  await b.waitForTimeout(300);
  assert.deepEqual(b.alerts, []);
  assert.deepEqual(a.alerts, []);
  await closeAll(a, b);
});

test('a server restart during a conversation loses nothing and doubles nothing', async () => {
  const [a, b, room] = await pair('kim', 'lee', 'restart');
  await send(a, 'before 1');
  await send(b, 'before 2');
  await waitTexts(a, ['before 1', 'before 2']);
  await waitTexts(b, ['before 1', 'before 2']);
  assert.equal(await stopServer(server), 0);
  await a.locator('#conn-state[data-state=reconnecting]').waitFor({ timeout: T });
  // written while the server is down: shown as pending, sent after the reconnect
  await send(a, 'during 1');
  await send(a, 'during 2');
  assert.equal(await a.locator('#messages li.msg.pending').count(), 2);
  server = await startServer();
  // someone else talks before the pages are back: they must catch up
  const tok = (await (await fetch(url() + 'api/login', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: b.who, password: 'correct horse battery' }),
  })).json()).token;
  const r = await fetch(url() + `api/rooms/${encodeURIComponent(room)}/messages`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + tok },
    body: JSON.stringify({ text: 'meanwhile' }),
  });
  assert.equal(r.status, 201);
  await a.locator('#conn-state[data-state=online]').waitFor({ timeout: 3 * T });
  await b.locator('#conn-state[data-state=online]').waitFor({ timeout: 3 * T });
  const want = ['before 1', 'before 2', 'meanwhile', 'during 1', 'during 2'];
  const wantAlt = ['before 1', 'before 2', 'during 1', 'during 2', 'meanwhile'];
  for (const p of [a, b]) {
    const deadline = Date.now() + 3 * T;
    let got;
    while (Date.now() < deadline) {
      got = await texts(p);
      if (got.length >= 5 && (await p.locator('#messages li.msg.pending').count()) === 0) break;
      await p.waitForTimeout(100);
    }
    assert.ok(JSON.stringify(got) === JSON.stringify(want) || JSON.stringify(got) === JSON.stringify(wantAlt),
              `${p.who} sees ${JSON.stringify(got)}`);
    // in seq order, each once
    const seqs = await p.locator('#messages li.msg[data-seq]').evaluateAll((els) => els.map((e) => +e.dataset.seq));
    assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
  }
  assert.deepEqual(await texts(a), await texts(b));
  await closeAll(a, b);
});

test('phone width: the room list is behind a button and the composer fits', async () => {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: TLS, viewport: { width: 375, height: 700 } });
  const page = await ctx.newPage();
  await page.goto(url());
  await page.getByRole('button', { name: 'Sign up' }).click();
  const who = name('pho');
  await page.getByLabel('Name', { exact: true }).fill(who);
  await page.getByLabel('Password', { exact: true }).fill('correct horse battery');
  await page.locator('#auth-submit').click();
  await page.locator('#conn-state[data-state=online]').waitFor({ timeout: T });
  assert.equal(await page.locator('#sidebar').isVisible(), false);
  await page.getByRole('button', { name: 'Rooms' }).click();
  assert.equal(await page.locator('#sidebar').isVisible(), true);
  await page.getByRole('button', { name: 'New room' }).click();
  await page.getByLabel('Room id').fill(name('small'));
  await page.locator('#room-create').click();
  await page.locator('#composer').waitFor({ timeout: T }); // shown once the new room opens
  const box = await page.locator('#composer').boundingBox();
  assert.ok(box && box.x >= 0 && box.x + box.width <= 376, JSON.stringify(box));
  // log out clears the token
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.locator('#auth-form').waitFor({ timeout: T });
  assert.equal(await page.evaluate(() => localStorage.getItem('sori.token')), null);
  await ctx.close();
});

async function tokenOf(who) {
  const r = await fetch(url() + 'api/login', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: who, password: 'correct horse battery' }),
  });
  return (await r.json()).token;
}

test('direct messages by name, presence dots, private rooms by invitation', async () => {
  const a = await person(name('dan'));
  const b = await person(name('fay'));
  // a starts a dm with b by name: b's list gets the room with an unread badge
  await a.getByRole('button', { name: 'Message a user' }).click();
  await a.getByLabel('User name').fill(b.who);
  await a.locator('#user-ok').click();
  await a.locator('#room-title', { hasText: b.who }).waitFor({ timeout: T });
  await a.locator('#room-meta', { hasText: 'online' }).waitFor({ timeout: T });  // b is online
  await send(a, 'just between us');
  const dm = `dm:${[a.who, b.who].sort().join(':')}`;
  await badge(b, dm, 'unread').filter({ hasText: '1' }).waitFor({ timeout: T });
  await b.locator(`.room-item[data-room="${dm}"]`).click();
  await waitTexts(b, ['just between us']);
  await send(b, 'sure');
  await waitTexts(a, ['just between us', 'sure']);
  await a.locator(`.room-item[data-room="${dm}"] .dot.online`).waitFor({ timeout: T });
  // b leaves: a's dot goes grey
  await closeAll(b);
  await a.locator(`.room-item[data-room="${dm}"] .dot:not(.online)`).waitFor({ timeout: T });
  // a private room: invisible in the directory until a invites c
  const c = await person(name('gus'));
  const priv = name('secret');
  await createRoom(a, priv, 'private');
  await c.getByRole('button', { name: 'Browse rooms' }).click();
  await c.locator('#browse-list li').first().waitFor({ timeout: T });
  assert.equal(await c.locator(`[data-join="${priv}"]`).count(), 0);
  await c.keyboard.press('Escape');
  await a.locator('#room-title', { hasText: priv }).waitFor({ timeout: T });
  await a.getByRole('button', { name: 'Invite' }).click();
  await a.getByLabel('User name').fill(c.who);
  await a.locator('#user-ok').click();
  await c.locator(`.room-item[data-room="${priv}"]`).waitFor({ timeout: T });
  await send(a, 'welcome in');
  await badge(c, priv, 'unread').filter({ hasText: '1' }).waitFor({ timeout: T });
  await c.locator(`.room-item[data-room="${priv}"]`).click();
  await waitTexts(c, ['welcome in']);
  await closeAll(a, c);
});

test('history loads on open and pages back on scrolling up', async () => {
  const a = await person(name('hal'));
  const room = name('long');
  await createRoom(a, room);
  const tok = await tokenOf(a.who);
  for (let i = 1; i <= 120; i++) {
    const r = await fetch(url() + `api/rooms/${encodeURIComponent(room)}/messages`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + tok },
      body: JSON.stringify({ text: `m${i}` }),
    });
    assert.equal(r.status, 201);
  }
  // a fresh page: the newest page first
  const p = await a.context().newPage();
  await p.goto(url());
  await p.locator(`.room-item[data-room="${room}"]`).click();
  await waitTexts(p, ['m119', 'm120']);
  const first = (await texts(p))[0];
  assert.equal(first, 'm71'); // 50 of them
  // scrolling to the top loads the older pages, in order, without duplicates
  for (let i = 0; i < 10 && (await texts(p))[0] !== 'm1'; i++) {
    await p.locator('#drop-zone').evaluate((e) => { e.scrollTop = 0; });
    await p.waitForTimeout(300);
  }
  const all = await texts(p);
  assert.deepEqual(all, Array.from({ length: 120 }, (_, i) => `m${i + 1}`));
  await closeAll(a);
});
