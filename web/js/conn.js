// conn.js: one WebSocket to sori's JSON protocol (PROTOCOL.md §2-§5) that
// stays up: it reconnects with exponential backoff (0.5 s doubling to 15 s,
// with jitter; after a 1012 close, a node restarting or draining, at once
// within a random 0.1-1 s whatever the earlier failures), tells the page its state (connecting, online, reconnecting,
// unauthorized), matches replies to commands by `ref`, and detects a dead
// link with a `ping` every 20 s (no answer in 10 s: reconnect). What to
// resend after a reconnect (joins with `since`, unacked sends) is the page's
// business: it listens for the `online` state.

const BACKOFF_MIN = 500;
const BACKOFF_MAX = 15000;
const PING_EVERY = 20000;
const PING_WAIT = 10000;

export class Conn extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.ws = null;
    this.state = 'connecting';
    this.refs = new Map();      // ref -> {resolve, reject}
    this.nextRef = 1;
    this.attempt = 0;
    this.timer = null;
    this.pingTimer = null;
    this.stopped = false;
    this.hello = null;
  }

  start() { this.open(); }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000, 'bye');
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  open() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/ws?token=${encodeURIComponent(this.token)}`;
    let ws;
    try {
      ws = new WebSocket(url, 'sori.v1');
    } catch (e) {
      this.retry();
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => { opened = true; };
    ws.onmessage = (e) => this.onFrame(e.data);
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      for (const { reject } of this.refs.values()) reject(new Error('disconnected'));
      this.refs.clear();
      if (this.stopped) return;
      // A refused handshake (bad or expired token) closes before opening:
      // let the page check the token; it calls retry() or signs out.
      if (!opened) this.dispatchEvent(new CustomEvent('refused'));
      // 1012 Service Restart (PROTOCOL.md §2): the node is draining; another
      // node, or this one restarted, takes us. Reconnect soon, spread over a
      // second so a node's clients do not all arrive at the same instant.
      if (e.code === 1012) this.attempt = 0;
      this.retry(e.code === 1012 ? 100 + Math.random() * 900 : undefined);
    };
  }

  // delay: ms before the next try (default: the backoff).
  retry(delay) {
    if (this.stopped) return;
    this.setState(this.hello ? 'reconnecting' : 'connecting');
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** this.attempt);
    this.attempt++;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay ?? base / 2 + Math.random() * base / 2);
  }

  onFrame(data) {
    let f;
    try { f = JSON.parse(data); } catch { return; }
    if (f.type === 'hello') {
      this.hello = f;
      this.attempt = 0;
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.ping(), PING_EVERY);
      this.setState('online');
      return;
    }
    if (f.ref !== undefined && this.refs.has(f.ref)) {
      const { resolve, reject } = this.refs.get(f.ref);
      this.refs.delete(f.ref);
      if (f.type === 'error') reject(Object.assign(new Error(f.message), { code: f.code }));
      else resolve(f);
      return;
    }
    this.dispatchEvent(new CustomEvent(f.type, { detail: f }));
  }

  async ping() {
    const ws = this.ws;
    const t = setTimeout(() => { if (this.ws === ws && ws) ws.close(4000, 'no pong'); }, PING_WAIT);
    try { await this.rpc({ type: 'ping' }); } catch { /* closed */ }
    clearTimeout(t);
  }

  // Sends cmd; resolves with its reply, rejects with its error (or on a
  // lost connection). Fire-and-forget commands (typing) use send().
  rpc(cmd) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.hello) {
        reject(new Error('disconnected'));
        return;
      }
      const ref = 'c' + this.nextRef++;
      this.refs.set(ref, { resolve, reject });
      this.ws.send(JSON.stringify({ ...cmd, ref }));
    });
  }

  send(cmd) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(cmd));
  }
}
