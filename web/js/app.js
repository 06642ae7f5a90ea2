// app.js: sori's browser client. Plain DOM, no framework, no build step.
//
// State lives in S: the rooms of the signed-in user (with unread and
// mention counts), the messages loaded per room (ordered by seq, each seq
// once), the highest seq seen per room (what `join since` asks for after a
// reconnect), and sends not yet confirmed (keyed by their cid, resent with
// the same cid after a reconnect, so the server's idempotency makes them
// appear once). Every text from the network reaches the page through
// textContent or createTextNode, never as HTML.

import { Conn } from './conn.js';
import * as API from './api.js';

const $ = (id) => document.getElementById(id);
const HISTORY_PAGE = 50;
const MAX_JOINED = 100; // the server's default rooms per connection
const TYPING_SHOW_MS = 3000;
const TYPING_SEND_MS = 1500;

const S = {
  token: localStorage.getItem('sori.token'),
  user: localStorage.getItem('sori.user'),
  conn: null,
  rooms: new Map(),   // id -> {id, kind, title, seq, last_read, unread, mentions, last_message}
  msgs: new Map(),    // id -> {list, seqs, loaded, hasMore, loading}
  lastSeq: new Map(), // id -> highest seq seen
  current: null,
  pending: new Map(), // cid -> {cid, room, to, text, attachments, failed, uploading}
  typing: new Map(),  // room -> Map(user -> timer)
  presence: new Map(),
  readSent: new Map(),
  lastTypingSent: 0,
};

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function newCid() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b); // available outside secure contexts too
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function dmPeer(room) {
  const [, a, b] = room.split(':');
  return a === S.user ? b : a;
}

function dmRoomId(a, b) {
  return 'dm:' + [a, b].sort().join(':');
}

function roomName(r) {
  if (r.kind === 'dm' || r.id.startsWith('dm:')) return dmPeer(r.id);
  return r.title || r.id;
}

function store(room) {
  let st = S.msgs.get(room);
  if (!st) {
    st = { list: [], seqs: new Set(), loaded: false, hasMore: true, loading: false };
    S.msgs.set(room, st);
  }
  return st;
}

function ensureRoom(id, kind) {
  let r = S.rooms.get(id);
  if (!r) {
    r = { id, kind: kind || (id.startsWith('dm:') ? 'dm' : 'public'), title: '', seq: 0, last_read: 0,
          unread: 0, mentions: 0, last_message: null };
    S.rooms.set(id, r);
  }
  return r;
}

function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

function showError(id, err) {
  $(id).textContent = err ? (err.message || String(err)) : '';
}

// ---------------------------------------------------------------- auth

let signupMode = false;

function showAuth() {
  $('chat').hidden = true;
  $('auth').hidden = false;
  $('auth-name').focus();
}

function setAuthMode(signup) {
  signupMode = signup;
  $('auth-title').textContent = signup ? 'Sign up' : 'Log in';
  $('auth-submit').textContent = signup ? 'Sign up' : 'Log in';
  $('auth-switch-text').textContent = signup ? 'Have an account?' : 'No account yet?';
  $('auth-switch').textContent = signup ? 'Log in' : 'Sign up';
  $('auth-password').autocomplete = signup ? 'new-password' : 'current-password';
  showError('auth-error', null);
}

async function onAuthSubmit(e) {
  e.preventDefault();
  const name = $('auth-name').value.trim();
  const password = $('auth-password').value;
  if (!/^[A-Za-z0-9_.-]{1,32}$/.test(name)) {
    showError('auth-error', new Error('Names are 1-32 letters, digits, _ . or -.'));
    return;
  }
  $('auth-submit').disabled = true;
  try {
    const r = signupMode ? await API.signup(name, password) : await API.login(name, password);
    localStorage.setItem('sori.token', r.token);
    localStorage.setItem('sori.user', r.user);
    S.token = r.token;
    S.user = r.user;
    $('auth-password').value = '';
    startChat();
  } catch (err) {
    showError('auth-error', err);
  } finally {
    $('auth-submit').disabled = false;
  }
}

function logout() {
  if (S.conn) S.conn.stop();
  localStorage.removeItem('sori.token');
  localStorage.removeItem('sori.user');
  location.reload();
}

// ---------------------------------------------------------------- connection

const STATE_TEXT = { connecting: 'Connecting…', online: 'Online', reconnecting: 'Reconnecting…' };

function startChat() {
  $('auth').hidden = true;
  $('chat').hidden = false;
  $('me-name').textContent = S.user;
  const c = new Conn(S.token);
  S.conn = c;
  c.addEventListener('state', (e) => {
    $('conn-state').dataset.state = e.detail;
    $('conn-state').textContent = STATE_TEXT[e.detail] || e.detail;
    if (e.detail === 'online') onOnline();
  });
  c.addEventListener('refused', async () => {
    try {
      await API.me(S.token);
    } catch (err) {
      if (err.status === 401) logout();
    }
  });
  c.addEventListener('message', (e) => onMessage(e.detail));
  c.addEventListener('typing', (e) => onTyping(e.detail));
  c.addEventListener('presence', (e) => onPresence(e.detail));
  c.addEventListener('member', (e) => onMember(e.detail));
  c.start();
  renderRooms();
}

async function onOnline() {
  const c = S.conn;
  try {
    const r = await c.rpc({ type: 'rooms' });
    for (const x of r.rooms) {
      const room = ensureRoom(x.id, x.kind);
      Object.assign(room, { kind: x.kind, title: x.title || '', last_read: x.last_read, unread: x.unread,
                            mentions: x.mentions || 0 });
      room.seq = Math.max(room.seq, x.seq);
      if (x.last_message && (!room.last_message || x.last_message.seq >= room.last_message.seq))
        room.last_message = x.last_message;
      if (!S.lastSeq.has(x.id)) S.lastSeq.set(x.id, x.seq);
    }
    renderRooms();
    // Catch up every room from the last seq this page saw: missed messages
    // come in order before `joined`, then live ones, with no gap.
    const ids = [...S.rooms.keys()].filter((id) => S.rooms.get(id).seq > 0 || !id.startsWith('dm:'));
    await Promise.all(ids.slice(0, MAX_JOINED).map((id) =>
      c.rpc({ type: 'join', room: id, since: S.lastSeq.get(id) || 0 }).catch(() => {})));
    // Resend what was not confirmed, with the same cid.
    for (const p of S.pending.values()) if (!p.failed && !p.uploading) transmit(p);
    const peers = [...S.rooms.values()].filter((x) => x.kind === 'dm').map((x) => dmPeer(x.id));
    if (peers.length) {
      const pr = await c.rpc({ type: 'presence', users: peers });
      for (const u of pr.users) S.presence.set(u.user, u.online);
      renderRooms();
    }
    if (S.current) {
      const st = store(S.current);
      if (!st.loaded) loadHistory(S.current);
      renderMessages();
      markRead();
    }
  } catch (err) {
    if (err.message !== 'disconnected') console.warn('sori:', err);
  }
}

// ---------------------------------------------------------------- events

function addMessage(m) {
  const st = store(m.room);
  if (st.seqs.has(m.seq)) return false;
  st.seqs.add(m.seq);
  const list = st.list;
  if (!list.length || list[list.length - 1].seq < m.seq) list.push(m);
  else {
    let i = list.length;
    while (i > 0 && list[i - 1].seq > m.seq) i--;
    list.splice(i, 0, m);
  }
  if ((S.lastSeq.get(m.room) || 0) < m.seq) S.lastSeq.set(m.room, m.seq);
  return true;
}

function onMessage(m) {
  if (!addMessage(m)) return;
  if (m.cid && m.from === S.user) S.pending.delete(m.cid);
  const room = ensureRoom(m.room);
  const fresh = m.seq > room.seq;
  room.seq = Math.max(room.seq, m.seq);
  if (!room.last_message || room.last_message.seq <= m.seq) room.last_message = m;
  const viewing = m.room === S.current && document.visibilityState === 'visible';
  if (fresh && !viewing && m.from !== S.user && m.seq > room.last_read) {
    room.unread++;
    if (m.mentions && m.mentions.includes(S.user)) room.mentions++;
  }
  if (m.room === S.current) {
    renderMessages();
    markRead();
  }
  clearTyping(m.room, m.from);
  renderRooms();
}

function onTyping(t) {
  if (t.user === S.user) return;
  clearTyping(t.room, t.user);
  let map = S.typing.get(t.room);
  if (!map) S.typing.set(t.room, (map = new Map()));
  map.set(t.user, setTimeout(() => clearTyping(t.room, t.user), TYPING_SHOW_MS));
  renderTyping();
}

function clearTyping(room, user) {
  const map = S.typing.get(room);
  if (!map || !map.has(user)) return;
  clearTimeout(map.get(user));
  map.delete(user);
  renderTyping();
}

function onPresence(p) {
  S.presence.set(p.user, p.online);
  renderRooms();
  renderHeader();
}

function onMember(ev) {
  if (ev.user === S.user && (ev.event === 'invited' || ev.event === 'joined')) {
    ensureRoom(ev.room, 'private');
    if (S.conn.state === 'online') {
      S.conn.rpc({ type: 'join', room: ev.room, since: S.lastSeq.get(ev.room) || 0 }).catch(() => {});
      S.conn.rpc({ type: 'rooms' }).then((r) => {
        for (const x of r.rooms) if (x.id === ev.room) Object.assign(ensureRoom(x.id), { kind: x.kind, title: x.title });
        renderRooms();
      }).catch(() => {});
    }
    renderRooms();
  } else if (ev.user === S.user && ev.event === 'kicked') {
    S.rooms.delete(ev.room);
    if (S.current === ev.room) openRoom(null);
    renderRooms();
  }
}

// ---------------------------------------------------------------- rooms

function renderRooms() {
  const ul = $('room-list');
  const rooms = [...S.rooms.values()].sort((a, b) =>
    ((b.last_message && b.last_message.ts) || 0) - ((a.last_message && a.last_message.ts) || 0) ||
    roomName(a).localeCompare(roomName(b)));
  const frag = document.createDocumentFragment();
  for (const r of rooms) {
    const name = roomName(r);
    const lm = r.last_message;
    const preview = lm ? `${lm.from === S.user ? 'You' : lm.from}: ${lm.text}` : (r.kind === 'dm' ? 'Direct message' : r.kind);
    const labels = [name];
    if (r.unread) labels.push(`${r.unread} unread`);
    if (r.mentions) labels.push(`${r.mentions} mention${r.mentions > 1 ? 's' : ''}`);
    const dot = r.kind === 'dm'
      ? el('span', { class: 'dot' + (S.presence.get(dmPeer(r.id)) ? ' online' : ''),
                     title: S.presence.get(dmPeer(r.id)) ? 'online' : 'offline' })
      : el('span', { class: 'kind', text: r.kind === 'private' ? '🔒' : '#', 'aria-hidden': 'true' });
    frag.append(el('li', {},
      el('button', { type: 'button', class: 'room-item', 'data-room': r.id, 'aria-label': labels.join(', '),
                     'aria-current': r.id === S.current ? 'true' : null, onclick: () => openRoom(r.id) },
        dot,
        el('span', { class: 'room-name', text: name }),
        r.mentions ? el('span', { class: 'badge mention', 'data-badge': 'mentions', text: '@' + r.mentions }) : null,
        r.unread ? el('span', { class: 'badge', 'data-badge': 'unread', text: String(r.unread) }) : null,
        el('span', { class: 'preview', text: preview.slice(0, 80) }))));
  }
  ul.replaceChildren(frag);
}

function renderHeader() {
  const r = S.current && S.rooms.get(S.current);
  $('room-title').textContent = r ? roomName(r) : 'Pick a room';
  let meta = '';
  if (r && r.kind === 'dm') meta = S.presence.get(dmPeer(r.id)) ? '● online' : 'offline';
  else if (r) meta = r.kind === 'private' ? 'private room' : `#${r.id}`;
  $('room-meta').textContent = meta;
  $('invite').hidden = !(r && r.kind === 'private');
  $('composer').hidden = !r;
}

function openRoom(id) {
  S.current = id;
  document.body.classList.remove('show-rooms');
  $('toggle-rooms').setAttribute('aria-expanded', 'false');
  showError('room-error', null);
  renderHeader();
  renderRooms();
  renderTyping();
  if (!id) {
    $('messages').replaceChildren();
    delete $('messages').dataset.room;
    return;
  }
  const st = store(id);
  renderMessages(true);
  if (!st.loaded) loadHistory(id);
  markRead();
  $('text').focus();
}

async function loadHistory(room, older) {
  const st = store(room);
  if (st.loading || (older && !st.hasMore)) return;
  if (S.conn.state !== 'online') return;
  st.loading = true;
  $('load-more').hidden = !older;
  const wrap = $('drop-zone');
  const before = wrap.scrollHeight - wrap.scrollTop;
  try {
    const cmd = { type: 'history', room, limit: HISTORY_PAGE };
    if (older && st.list.length) cmd.before = st.list[0].seq;
    const h = await S.conn.rpc(cmd);
    for (const m of h.messages) addMessage(m);
    st.hasMore = h.has_more;
    st.loaded = true;
  } catch (err) {
    if (err.code === 'not_found') { st.loaded = true; st.hasMore = false; } // a dm not started yet
    else if (err.message !== 'disconnected') showError('room-error', err);
  } finally {
    st.loading = false;
    $('load-more').hidden = true;
  }
  if (room === S.current) {
    renderMessages(!older);
    if (older) wrap.scrollTop = wrap.scrollHeight - before; // keep the view where it was
    markRead();
  }
}

// ---------------------------------------------------------------- messages

function renderText(m) {
  const p = el('p', { class: 'text' });
  const names = new Set(m.mentions || []);
  const re = /@([A-Za-z0-9_.-]+)/g;
  let last = 0;
  let x;
  while ((x = re.exec(m.text)) !== null) {
    let name = x[1];
    while (name.endsWith('.') && !names.has(name)) name = name.slice(0, -1);
    if (!names.has(name)) continue;
    p.append(document.createTextNode(m.text.slice(last, x.index)));
    p.append(el('mark', { class: 'mention' + (name === S.user ? ' me' : ''), text: '@' + name }));
    last = x.index + 1 + name.length;
  }
  p.append(document.createTextNode(m.text.slice(last)));
  return p;
}

function renderAttachments(m) {
  if (!m.attachments || !m.attachments.length) return null;
  const div = el('div', { class: 'attachments' });
  for (const a of m.attachments) {
    if (!/^[0-9a-f]{32}$/.test(a.id)) continue;
    const src = `/uploads/${a.id}?token=${encodeURIComponent(S.token)}`;
    div.append(el('a', { href: src, target: '_blank', rel: 'noopener' },
      el('img', { src, alt: `Image from ${m.from}`, loading: 'lazy', class: 'image' })));
  }
  return div;
}

function renderOne(m, pending) {
  const time = new Date(m.ts || Date.now());
  const li = el('li', { class: 'msg' + (m.from === S.user ? ' mine' : '') + (pending ? ' pending' : '') +
                                   (pending && pending.failed ? ' failed' : ''),
                        'data-seq': pending ? null : m.seq, 'data-cid': m.cid || null },
    el('div', { class: 'meta' },
      el('span', { class: 'from', text: m.from }),
      el('time', { datetime: time.toISOString(), text: time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) }),
      pending ? el('span', { class: 'state', text: pending.failed ? `Not sent: ${pending.failed}` : pending.uploading ? 'Uploading…' : 'Sending…' }) : null,
      pending && pending.failed ? el('button', { type: 'button', class: 'link', text: 'Retry',
                                                 onclick: () => { pending.failed = null; transmit(pending); renderMessages(); } }) : null,
      pending && pending.failed ? el('button', { type: 'button', class: 'link', text: 'Discard',
                                                 onclick: () => { S.pending.delete(pending.cid); renderMessages(); } }) : null),
    renderText(m),
    renderAttachments(m));
  return li;
}

// The list is updated in place (keyed by day, seq or pending cid) rather
// than rebuilt, so a screen reader's live region announces only what is new.
function renderMessages(toBottom) {
  const room = S.current;
  if (!room) return;
  const wrap = $('drop-zone');
  const ol = $('messages');
  const atBottom = toBottom || wrap.scrollTop + wrap.clientHeight >= wrap.scrollHeight - 40;
  const want = []; // [key, make()]
  let day = null;
  const addDay = (ts) => {
    const k = dayKey(ts);
    if (k === day) return;
    day = k;
    want.push(['d:' + k, () => el('li', { class: 'day', role: 'separator' },
      el('span', { text: new Date(ts).toLocaleDateString([], { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' }) }))]);
  };
  for (const m of store(room).list) {
    addDay(m.ts);
    want.push(['s:' + m.seq, () => renderOne(m)]);
  }
  for (const p of S.pending.values()) {
    if (p.room !== room) continue;
    addDay(p.ts);
    const m = { from: S.user, text: p.text, ts: p.ts, cid: p.cid, attachments: null };
    want.push([`p:${p.cid}:${p.failed ? 'f' : p.uploading ? 'u' : 's'}`, () => renderOne(m, p)]);
  }
  if (ol.dataset.room !== room) {
    ol.replaceChildren();
    ol.dataset.room = room;
  }
  const keys = new Set(want.map(([k]) => k));
  for (const li of [...ol.children]) if (!keys.has(li.dataset.key)) li.remove();
  let cur = ol.firstElementChild;
  for (const [k, make] of want) {
    if (cur && cur.dataset.key === k) {
      cur = cur.nextElementSibling;
      continue;
    }
    const li = make();
    li.dataset.key = k;
    ol.insertBefore(li, cur);
  }
  if (atBottom) wrap.scrollTop = wrap.scrollHeight;
}

function renderTyping() {
  const map = S.current && S.typing.get(S.current);
  const who = map ? [...map.keys()] : [];
  $('typing').textContent = !who.length ? '' : who.length === 1 ? `${who[0]} is typing…` : `${who.join(', ')} are typing…`;
}

let readTimer = null;
function markRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    const room = S.current;
    if (!room || document.visibilityState !== 'visible' || S.conn.state !== 'online') return;
    const seq = S.lastSeq.get(room) || 0;
    const r = S.rooms.get(room);
    if (r) { r.unread = 0; r.mentions = 0; r.last_read = Math.max(r.last_read, seq); }
    renderRooms();
    if (!seq || (S.readSent.get(room) || 0) >= seq || !(store(room).list.length)) return;
    S.readSent.set(room, seq);
    S.conn.rpc({ type: 'read', room, seq }).catch(() => S.readSent.delete(room));
  }, 200);
}

// ---------------------------------------------------------------- sending

function transmit(p) {
  if (S.conn.state !== 'online') return; // resent when online again
  const cmd = p.to ? { type: 'dm', to: p.to, text: p.text, cid: p.cid }
                   : { type: 'send', room: p.room, text: p.text, cid: p.cid };
  if (p.attachments) cmd.attachments = p.attachments;
  S.conn.rpc(cmd).then(() => {
    // the message event (sent to us too) replaces the pending entry
  }).catch((err) => {
    if (err.message === 'disconnected') return; // resent after the reconnect
    p.failed = err.message;
    if (p.room === S.current) renderMessages();
  });
}

function queueSend(text, attachments) {
  const room = S.current;
  const r = S.rooms.get(room);
  const p = { cid: newCid(), room, to: r && r.kind === 'dm' ? dmPeer(room) : null, text, attachments: attachments || null,
              ts: Date.now(), failed: null };
  S.pending.set(p.cid, p);
  renderMessages(true);
  transmit(p);
  return p;
}

function onSubmit(e) {
  e.preventDefault();
  const t = $('text');
  const text = t.value;
  if (!text.trim() || !S.current) return;
  t.value = '';
  autosize();
  S.lastTypingSent = 0; // the next keystroke announces typing again
  queueSend(text);
}

async function sendImage(file) {
  if (!S.current || !file) return;
  if (!/^image\/(png|jpeg|gif|webp)$/.test(file.type)) {
    showError('room-error', new Error('Only PNG, JPEG, GIF and WebP images can be sent.'));
    return;
  }
  const caption = $('text').value.trim() || file.name || 'image';
  $('text').value = '';
  const room = S.current;
  const p = { cid: newCid(), room, to: null, text: caption, attachments: null, ts: Date.now(), uploading: true, failed: null };
  const r = S.rooms.get(room);
  if (r && r.kind === 'dm') {
    showError('room-error', new Error('Images go in rooms; direct messages carry text only.'));
    return;
  }
  S.pending.set(p.cid, p);
  renderMessages(true);
  try {
    const up = await API.upload(S.token, file);
    p.attachments = [{ id: up.id }];
    p.uploading = false;
    transmit(p);
  } catch (err) {
    p.uploading = false;
    p.failed = err.message;
  }
  if (room === S.current) renderMessages();
}

function autosize() {
  const t = $('text');
  t.style.height = 'auto';
  t.style.height = Math.min(t.scrollHeight, 160) + 'px';
}

// ---------------------------------------------------------------- dialogs

function dialogError(form, err) {
  form.querySelector('.error').textContent = err ? err.message : '';
}

function askUser(title, okText, onOk) {
  const dlg = $('dlg-user');
  const form = $('form-user');
  $('dlg-user-title').textContent = title;
  $('user-ok').textContent = okText;
  $('user-name').value = '';
  dialogError(form, null);
  form.onsubmit = async (e) => {
    if (e.submitter && e.submitter.value === 'cancel') return;
    e.preventDefault();
    const name = $('user-name').value.trim();
    if (!/^[A-Za-z0-9_.-]{1,32}$/.test(name)) {
      dialogError(form, new Error('Names are 1-32 letters, digits, _ . or -.'));
      return;
    }
    try {
      await onOk(name);
      dlg.close();
    } catch (err) {
      dialogError(form, err);
    }
  };
  dlg.showModal();
}

function newRoomDialog() {
  const dlg = $('dlg-room');
  const form = $('form-room');
  form.reset();
  dialogError(form, null);
  form.onsubmit = async (e) => {
    if (e.submitter && e.submitter.value === 'cancel') return;
    e.preventDefault();
    const id = $('room-id').value.trim();
    const kind = form.querySelector('input[name=kind]:checked').value;
    if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(id) || id.startsWith('dm:')) {
      dialogError(form, new Error('Room ids are 1-64 letters, digits, _ . : or - (not starting with dm:).'));
      return;
    }
    try {
      await S.conn.rpc({ type: 'create', room: id, kind, title: $('room-name').value.trim() || undefined });
      const r = ensureRoom(id, kind);
      r.title = $('room-name').value.trim();
      await S.conn.rpc({ type: 'join', room: id, since: 0 });
      store(id).loaded = true;
      store(id).hasMore = false;
      dlg.close();
      openRoom(id);
    } catch (err) {
      dialogError(form, err);
    }
  };
  dlg.showModal();
}

async function browseDialog() {
  const dlg = $('dlg-browse');
  const ul = $('browse-list');
  ul.replaceChildren(el('li', { text: 'Loading…' }));
  dlg.showModal();
  try {
    const r = await S.conn.rpc({ type: 'rooms', public: true });
    const frag = document.createDocumentFragment();
    for (const x of r.rooms) {
      const mine = S.rooms.has(x.id);
      frag.append(el('li', {},
        el('span', { class: 'room-name', text: x.title || x.id }),
        el('span', { class: 'muted', text: ` #${x.id} · ${x.members} member${x.members === 1 ? '' : 's'}` }),
        el('button', { type: 'button', text: mine ? 'Open' : 'Join', 'data-join': x.id,
                       onclick: async () => {
                         try {
                           if (!mine) {
                             const room = ensureRoom(x.id, 'public');
                             room.title = x.title || '';
                             await S.conn.rpc({ type: 'join', room: x.id, since: Math.max(0, x.seq - HISTORY_PAGE) });
                           }
                           dlg.close();
                           openRoom(x.id);
                         } catch (err) {
                           showError('room-error', err);
                         }
                       } })));
    }
    if (!r.rooms.length) frag.append(el('li', { text: 'No public rooms yet: create one.' }));
    ul.replaceChildren(frag);
  } catch (err) {
    ul.replaceChildren(el('li', { class: 'error', text: err.message }));
  }
}

// ---------------------------------------------------------------- wiring

function init() {
  $('auth-form').addEventListener('submit', onAuthSubmit);
  $('auth-switch').addEventListener('click', () => setAuthMode(!signupMode));
  $('logout').addEventListener('click', logout);
  $('composer').addEventListener('submit', onSubmit);
  $('text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('text').addEventListener('input', () => {
    autosize();
    const now = Date.now();
    if (S.current && now - S.lastTypingSent > TYPING_SEND_MS && $('text').value) {
      S.lastTypingSent = now;
      S.conn.send({ type: 'typing', room: S.current });
    }
  });
  $('text').addEventListener('paste', (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith('image/'));
    if (files.length) {
      e.preventDefault();
      files.forEach(sendImage);
    }
  });
  $('file').addEventListener('change', () => {
    [...$('file').files].forEach(sendImage);
    $('file').value = '';
  });
  const zone = $('drop-zone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('drag'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('drag'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('drag');
    [...e.dataTransfer.files].forEach(sendImage);
  });
  zone.addEventListener('scroll', () => {
    if (zone.scrollTop < 60 && S.current) loadHistory(S.current, true);
  });
  $('new-room').addEventListener('click', newRoomDialog);
  $('browse').addEventListener('click', browseDialog);
  $('new-dm').addEventListener('click', () => askUser('Message a user', 'Open', async (name) => {
    if (name === S.user) throw new Error('That is you.');
    const id = dmRoomId(S.user, name);
    ensureRoom(id, 'dm');
    openRoom(id);
    S.conn.rpc({ type: 'presence', users: [name] }).then((pr) => {
      for (const u of pr.users) S.presence.set(u.user, u.online);
      renderRooms();
      renderHeader();
    }).catch(() => {});
  }));
  $('invite').addEventListener('click', () => askUser('Invite to this room', 'Invite', async (name) => {
    await S.conn.rpc({ type: 'invite', room: S.current, user: name });
  }));
  $('toggle-rooms').addEventListener('click', () => {
    const open = document.body.classList.toggle('show-rooms');
    $('toggle-rooms').setAttribute('aria-expanded', String(open));
  });
  document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible') markRead(); });
  setAuthMode(false);
  if (S.token && S.user) startChat();
  else showAuth();
}

init();
