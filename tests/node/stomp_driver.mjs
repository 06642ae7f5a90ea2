// stomp_driver.mjs: drives one @stomp/stompjs client (on npm's `ws`) for the
// STOMP integration tests. Usage: node stomp_driver.mjs '<json options>'
//   options: {url, connectHeaders, heartbeatIncoming, heartbeatOutgoing}
// Commands come as JSON lines on stdin:
//   {"op":"subscribe","id":"s1","destination":"/topic/room.x","headers":{...}}
//   {"op":"unsubscribe","id":"s1"}
//   {"op":"publish","destination":"...","body":"...","headers":{...},"receipt":"r1"}
//   {"op":"ack","id":"<ack header>","subscription":"s1"}
//   {"op":"deactivate"}
// Events go to stdout as JSON lines: connected, message, receipt, error,
// closed, heartbeat counters ({"ev":"stats"} after {"op":"stats"}).
// The client never reconnects: a closed socket ends the process.
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import readline from 'node:readline';

const opts = JSON.parse(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const subs = new Map();
let pongs = 0;

const client = new Client({
  webSocketFactory: () => new WebSocket(opts.url, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
  connectHeaders: opts.connectHeaders || {},
  heartbeatIncoming: opts.heartbeatIncoming ?? 0,
  heartbeatOutgoing: opts.heartbeatOutgoing ?? 0,
  reconnectDelay: 0,
  debug: (s) => { if (s.startsWith('<<< PONG')) pongs++; },
  onConnect: (frame) => out({ ev: 'connected', headers: frame.headers }),
  onStompError: (frame) => out({ ev: 'error', headers: frame.headers, body: frame.body }),
  onWebSocketClose: (e) => { out({ ev: 'closed', code: e.code, reason: e.reason }); process.exit(0); },
  onUnhandledReceipt: (frame) => out({ ev: 'receipt', id: frame.headers['receipt-id'], headers: frame.headers }),
});

function onCommand(c) {
  if (c.op === 'subscribe') {
    const sub = client.subscribe(c.destination, (m) => {
      out({ ev: 'message', subscription: c.id, destination: m.headers.destination, headers: m.headers,
            body: m.body, ack: m.headers.ack || null });
    }, { id: c.id, ...(c.headers || {}) });
    subs.set(c.id, sub);
  } else if (c.op === 'unsubscribe') {
    subs.get(c.id).unsubscribe(c.headers || {});
  } else if (c.op === 'publish') {
    const headers = { ...(c.headers || {}) };
    if (c.receipt) headers.receipt = c.receipt;
    client.publish({ destination: c.destination, body: c.body, headers });
  } else if (c.op === 'ack') {
    client.ack(c.id, c.subscription, c.headers || {});
  } else if (c.op === 'stats') {
    out({ ev: 'stats', pongs, connected: client.connected });
  } else if (c.op === 'deactivate') {
    client.deactivate();
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim()) onCommand(JSON.parse(line));
});
process.stdin.on('end', () => client.deactivate());
client.activate();
