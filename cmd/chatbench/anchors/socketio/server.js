// chatbench's Socket.IO anchor: one Socket.IO 4 node on its Redis adapter,
// set up as a chat room's fastest path: the websocket transport only, no
// per-message deflate, one Socket.IO room per chat room.
//
//   node server.js -addr 127.0.0.1:8000 -redis 127.0.0.1:6379
//
// A client connects to /socket.io/?EIO=4&transport=websocket&room=<room>
// and joins that room. Every event "m" it emits is emitted to the whole
// room, the sender included: the path chatbench measures on every target.
// The adapter publishes each emit on Redis, as it would for other nodes.
// GET /healthz answers 200 once both Redis connections are up.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

// args reads "-name value" pairs from the command line (the defaults
// listen on the loopback address only).
function args(argv) {
  const out = { addr: '127.0.0.1:8000', redis: '127.0.0.1:6379' };
  for (let i = 0; i + 1 < argv.length; i += 2) {
    const name = argv[i].replace(/^-+/, '');
    if (!(name in out)) {
      throw new Error(`unknown flag ${argv[i]} (use -addr host:port -redis host:port)`);
    }
    out[name] = argv[i + 1];
  }
  return out;
}

// splitAddr splits "host:port".
function splitAddr(addr) {
  const i = addr.lastIndexOf(':');
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

async function main() {
  const opts = args(process.argv.slice(2));
  let ready = false;
  const server = http.createServer((req, res) => {
    // Socket.IO answers its own path before this handler runs.
    if (req.url === '/healthz') {
      res.writeHead(ready ? 200 : 503).end(ready ? 'ok' : 'starting');
      return;
    }
    res.writeHead(404).end();
  });
  // The adapter needs two connections: one publishes, one subscribes.
  const pub = createClient({ url: `redis://${opts.redis}` });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) {
    c.on('error', (err) => console.error('redis:', err.message));
  }
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server(server, {
    transports: ['websocket'],
    perMessageDeflate: false,
    serveClient: false,
    adapter: createAdapter(pub, sub),
  });
  io.on('connection', (socket) => {
    const room = socket.handshake.query.room;
    if (typeof room !== 'string' || room === '') {
      socket.disconnect(true); // the client sees "41": counted as an error
      return;
    }
    socket.join(room);
    // To the whole room, through the adapter (and so Redis).
    socket.on('m', (data) => io.to(room).emit('m', data));
  });
  const { host, port } = splitAddr(opts.addr);
  server.listen(port, host, () => {
    ready = true;
  });
  const stop = () => io.close(() => Promise.all([pub.quit(), sub.quit()]).finally(() => process.exit(0)));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error('socket.io anchor:', err);
  process.exit(1);
});
