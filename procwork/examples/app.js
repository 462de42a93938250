// A plain Node.js HTTP server, ready for procwork (and for PM2).
//
//   procwork run -w 2 --listen tcp://127.0.0.1:3000 -- node app.js
//   pm2 start app.js -i 2 --wait-ready
//   PORT=3000 node app.js
//
// - The socket: procwork passes it as descriptor 3 (LISTEN_FDS, with
//   LISTEN_PID = this process); otherwise the app listens on $PORT.
// - Readiness: once listening it says READY=1 on the descriptor procwork
//   names in PROCWORK_NOTIFY_FD (Node cannot send a datagram to the
//   NOTIFY_SOCKET address itself), or process.send('ready') under PM2.
// - Draining on SIGTERM (procwork) or SIGINT (PM2): stop accepting (the
//   shared socket stays open in procwork, other workers accept), answer
//   each request still coming on a kept-alive connection with
//   `Connection: close`, close connections idle for the whole grace, exit
//   when none is left. With APP_DRAIN=close it drains as most apps do,
//   with http.Server's close() (for the benchmark's comparison).
'use strict';
const http = require('http');
const fs = require('fs');
const net = require('net');

const GRACE_MS = Number(process.env.DRAIN_GRACE_MS || 5000);
let draining = false;
const idle = new Set();

const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  const body = `hello from pid ${process.pid}\n`;
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
server.keepAliveTimeout = 5000;
server.on('connection', (socket) => {
  idle.add(socket);
  socket.on('close', () => idle.delete(socket));
});
server.on('request', (req, res) => {
  idle.delete(req.socket);
  res.on('finish', () => { if (!req.socket.destroyed) idle.add(req.socket); });
});

function ready() {
  const fd = Number(process.env.PROCWORK_NOTIFY_FD);
  if (fd > 0) fs.writeSync(fd, 'READY=1');
  else if (process.send) process.send('ready');
}

const listenFds = Number(process.env.LISTEN_FDS || 0);
if (listenFds >= 1 && Number(process.env.LISTEN_PID) === process.pid) {
  server.listen({ fd: 3 }, ready);
} else {
  server.listen(Number(process.env.PORT || 3000), '127.0.0.1', ready);
}

function drain() {
  if (draining) return;
  draining = true;
  if (process.env.APP_DRAIN === 'close') {
    server.close(() => process.exit(0));
    return;
  }
  // net.Server's close: stop accepting, without http.Server's
  // closeIdleConnections (which races a client sending its next request).
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => { for (const s of idle) s.destroy(); }, GRACE_MS).unref();
  setTimeout(() => process.exit(0), 2 * GRACE_MS).unref();
}
process.on('SIGTERM', drain);
process.on('SIGINT', drain);
