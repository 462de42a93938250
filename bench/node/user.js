// user.*: what a Node.js cluster costs a user: a `cluster` of 2 `http`
// workers on 127.0.0.1 per policy (rr and none) under a keep-alive load of
// 16 connections, and the resident memory of an idle worker. The ids are
// those of cluster-core's `benches/user.rs`.
//
// This script is the driver and the load client (a bare `net` client, one
// request at a time per connection, bounded in requests and in time); it
// starts one cluster primary per policy (`--server rr|none`) in its own
// process group. The client runs in one Node process: on 2 vCPUs it is
// likely the bottleneck of the requests-per-second rows.
//
//   user.keepalive_{rr,none}_per_s   requests per second
//   user.keepalive_{rr,none}_p50_us  latency, median
//   user.keepalive_{rr,none}_p99_us  latency, 99th percentile
//   user.idle_worker_rss_mib         VmRSS of an idle worker (rr), MiB
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const { quick, emit, now, watchdog, startServer } = require('./lib/common.js');

const WORKERS = 2;
const CONNECTIONS = 16;
const serverArg = process.argv.indexOf('--server');

if (serverArg !== -1) {
  const cluster = require('node:cluster');
  if (cluster.isPrimary) {
    let listening = 0;
    cluster.on('listening', (worker, address) => {
      listening++;
      if (listening === WORKERS) {
        const pids = Object.values(cluster.workers).map((w) => w.process.pid);
        process.stdout.write(JSON.stringify({ port: address.port, pids }) + '\n');
      }
    });
    for (let i = 0; i < WORKERS; i++) cluster.fork();
  } else {
    http.createServer((req, res) => res.end('hello world\n')).listen(0, '127.0.0.1');
  }
  return;
}

watchdog(quick ? 50 : 170);

const REQUEST = 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';

/** One keep-alive connection: `n` requests one at a time; their latencies (µs). */
function client(port, n, deadline) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.setTimeout(5000, () => socket.destroy(new Error('request timed out')));
    const latencies = [];
    let text = '';
    let sent = 0n;
    const next = () => {
      if (latencies.length >= n || now() > deadline) {
        socket.end();
        resolve(latencies);
        return;
      }
      sent = process.hrtime.bigint();
      socket.write(REQUEST);
    };
    socket.once('connect', next);
    socket.on('data', (d) => {
      text += d;
      const head = text.indexOf('\r\n\r\n');
      if (head === -1) return;
      const m = /content-length:\s*(\d+)/i.exec(text.slice(0, head));
      const body = m ? Number(m[1]) : 0;
      if (text.length < head + 4 + body) return;
      text = text.slice(head + 4 + body);
      latencies.push(Number(process.hrtime.bigint() - sent) / 1e3);
      next();
    });
    socket.once('error', reject);
  });
}

async function load(port, perConn, budgetNs) {
  const start = now();
  const all = (await Promise.all(Array.from({ length: CONNECTIONS },
    () => client(port, perConn, start + budgetNs)))).flat();
  const seconds = (now() - start) / 1e9;
  all.sort((a, b) => a - b);
  const at = (q) => all[Math.floor((all.length - 1) * q)];
  return { rate: all.length / seconds, p50: at(0.5), p99: at(0.99) };
}

function rssMib(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
  const m = /VmRSS:\s*(\d+)/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

async function main() {
  const rr = startServer(__filename, 'rr');
  const none = startServer(__filename, 'none');
  const servers = [rr.child, none.child];
  const stop = () => servers.forEach((s) => { try { process.kill(-s.pid, 'SIGKILL'); } catch { /* gone */ } });
  process.on('exit', stop);
  try {
    const [rrInfo, noneInfo] = await Promise.all([rr.info, none.info]);
    const perConn = quick ? 25 : 1250;
    const budget = 20e9;
    await load(rrInfo.port, 20, budget);
    await load(noneInfo.port, 20, budget);
    const runs = { rr: [], none: [] };
    for (let rep = 0; rep < (quick ? 1 : 3); rep++) {
      runs.rr.push(await load(rrInfo.port, perConn, budget));
      runs.none.push(await load(noneInfo.port, perConn, budget));
    }
    for (const name of ['rr', 'none']) {
      const r = runs[name];
      emit(`user.keepalive_${name}_per_s`, `keep-alive HTTP requests per second, 16 connections, cluster \`${name}\` of 2`, 'per_s', 'higher', r.map((x) => x.rate));
      emit(`user.keepalive_${name}_p50_us`, `keep-alive HTTP latency p50, cluster \`${name}\``, 'us', 'lower', r.map((x) => x.p50));
      emit(`user.keepalive_${name}_p99_us`, `keep-alive HTTP latency p99, cluster \`${name}\``, 'us', 'lower', r.map((x) => x.p99));
    }
    const rss = rrInfo.pids.map(rssMib);
    emit('user.idle_worker_rss_mib', 'resident memory of an idle worker (MiB)', 'mib', 'lower', [rss.reduce((a, b) => a + b, 0) / rss.length]);
  } finally {
    stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
