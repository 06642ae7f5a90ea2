'use strict';
// A chat server as a Node.js user writes it with `ws`: one process, rooms in
// memory (no persistence), JSON.stringify once per message and ws.send() to
// every joined client. It speaks the part of sori's protocol that `sori bench`
// uses (PROTOCOL.md §2-§4): hello on connect, create, join, send (ack to the
// sender, a message event to every joined connection including the sender),
// ping. Guests only: ?user=NAME, no tokens.
//
//   node server.js [--host 127.0.0.1] [--port 8080]
// Prints "listening HOST:PORT" once it accepts connections.

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf('--' + name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const host = opt('host', '127.0.0.1');
const port = Number(opt('port', '8080'));

const rooms = new Map(); // name -> { kind, seq, clients: Set<WebSocket> }
let nextSession = 1;
let nextId = 1;

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});
const wss = new WebSocketServer({ server, path: '/ws' });

function reply(ws, obj) {
  ws.send(JSON.stringify(obj));
}

function error(ws, ref, code, message) {
  const e = { type: 'error', code, message };
  if (ref !== undefined) e.ref = ref;
  reply(ws, e);
}

wss.on('connection', (ws, req) => {
  const user = new URL(req.url, 'http://localhost').searchParams.get('user');
  if (!user) {
    ws.close(1008, 'user required');
    return;
  }
  ws.user = user;
  ws.joined = new Set();
  reply(ws, {
    type: 'hello', user, session: String(nextSession++), node: 'node-ws',
    heartbeat_ms: 0, server_time: Date.now(),
  });

  ws.on('message', (data, isBinary) => {
    let cmd;
    try {
      cmd = JSON.parse(data);
    } catch (_) {
      error(ws, undefined, 'bad_request', 'frames must be JSON objects');
      return;
    }
    if (isBinary || cmd === null || typeof cmd !== 'object') {
      error(ws, undefined, 'bad_request', 'frames must be JSON objects');
      return;
    }
    const ref = cmd.ref;
    switch (cmd.type) {
      case 'create': {
        if (typeof cmd.room !== 'string' || !cmd.room) return error(ws, ref, 'bad_request', 'room is required');
        if (rooms.has(cmd.room)) return error(ws, ref, 'conflict', 'that room exists');
        const kind = cmd.kind === 'private' ? 'private' : 'public';
        rooms.set(cmd.room, { kind, seq: 0, clients: new Set() });
        return reply(ws, { type: 'created', room: cmd.room, kind, ref });
      }
      case 'join': {
        const room = rooms.get(cmd.room);
        if (!room) return error(ws, ref, 'not_found', 'no such room');
        room.clients.add(ws);
        ws.joined.add(cmd.room);
        return reply(ws, { type: 'joined', room: cmd.room, seq: room.seq, kind: room.kind, ref });
      }
      case 'leave': {
        const room = rooms.get(cmd.room);
        if (room) room.clients.delete(ws);
        ws.joined.delete(cmd.room);
        return reply(ws, { type: 'left', room: cmd.room, ref });
      }
      case 'send': {
        const room = rooms.get(cmd.room);
        if (!room) return error(ws, ref, 'not_found', 'no such room');
        if (!ws.joined.has(cmd.room)) return error(ws, ref, 'not_member', 'join the room first');
        if (typeof cmd.text !== 'string') return error(ws, ref, 'bad_request', 'text is required');
        const seq = ++room.seq;
        const id = String(nextId++);
        const ts = Date.now();
        reply(ws, { type: 'ack', room: cmd.room, id, seq, ts, ref });
        const out = JSON.stringify({ type: 'message', room: cmd.room, id, seq, from: ws.user, text: cmd.text, ts });
        for (const client of room.clients) {
          if (client.readyState === WebSocket.OPEN) client.send(out);
        }
        return;
      }
      case 'ping':
        return reply(ws, { type: 'pong', ref });
      default:
        return error(ws, ref, 'bad_request', 'unknown type');
    }
  });

  ws.on('close', () => {
    for (const name of ws.joined) {
      const room = rooms.get(name);
      if (room) room.clients.delete(ws);
    }
  });
  ws.on('error', () => {});
});

server.listen(port, host, () => {
  console.log(`listening ${host}:${server.address().port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
