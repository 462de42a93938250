// http.*: Node's cluster serving HTTP on 127.0.0.1 with 2 workers, a new
// connection per request (`Connection: close`, a bare `net` client), under both
// scheduling policies. Figures (Node 20, 2 vCPUs): round-robin 12.5k conn/s
// (raw C hand-off 26k/s); none (shared listener) 23.7k conn/s (raw shared
// accept 39k/s); round-robin fairness, busiest over quietest worker, 1.02-1.44.
//
// This script is the driver and the load client; it starts one cluster
// primary per policy (`--server rr|none`, NODE_CLUSTER_SCHED_POLICY), each in
// its own process group, and alternates the client between them. The client
// is bounded in requests and in time.
//
//   http.rr_conn_per_s    connections (requests) per second, SCHED_RR
//   http.none_conn_per_s  the same, SCHED_NONE
//   http.rr_fairness      SCHED_RR: requests of the busiest worker / the quietest
'use strict';

const http = require('node:http');
const net = require('node:net');
const { quick, emit, now, watchdog, startServer } = require('./lib/common.js');

const WORKERS = 2;
const serverArg = process.argv.indexOf('--server');

if (serverArg !== -1) {
  const cluster = require('node:cluster');
  if (cluster.isPrimary) {
    let listening = 0;
    cluster.on('listening', (worker, address) => {
      listening++;
      if (listening === WORKERS) process.stdout.write(JSON.stringify({ port: address.port }) + '\n');
    });
    for (let i = 0; i < WORKERS; i++) cluster.fork();
  } else {
    const body = String(cluster.worker.id);
    http.createServer((req, res) => res.end(body)).listen(0, '127.0.0.1');
  }
  return;
}

watchdog(quick ? 50 : 170);

const REQUEST = 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n';

/** One request on a new connection, with a bare `net` client (cheaper than
 * `http.get`, so the client steals less of the 2 CPUs); resolves to the body. */
function get(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let text = '';
    socket.setEncoding('latin1');
    socket.setTimeout(5000, () => socket.destroy(new Error('request timed out')));
    socket.once('connect', () => socket.end(REQUEST));
    socket.on('data', (d) => { text += d; });
    socket.once('error', reject);
    socket.once('close', () => {
      const at = text.indexOf('\r\n\r\n');
      if (!text.startsWith('HTTP/1.1 200') || at === -1) reject(new Error(`bad response: ${text.slice(0, 40)}`));
      else resolve(text.slice(at + 4));
    });
  });
}

/** Bounded load: `total` requests by `concurrency` loops, or until the budget runs out. */
async function load(port, total, concurrency, budgetNs) {
  const perWorker = new Map();
  let started = 0;
  let done = 0;
  const start = now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (started < total && now() - start < budgetNs) {
      started++;
      const worker = await get(port);
      perWorker.set(worker, (perWorker.get(worker) || 0) + 1);
      done++;
    }
  }));
  const seconds = (now() - start) / 1e9;
  const counts = [...perWorker.values()];
  while (counts.length < WORKERS) counts.push(0);
  return { rate: done / seconds, fairness: Math.max(...counts) / Math.max(1, Math.min(...counts)) };
}

async function main() {
  const rr = startServer(__filename, 'rr');
  const none = startServer(__filename, 'none');
  const servers = [rr.child, none.child];
  const stop = () => servers.forEach((s) => { try { process.kill(-s.pid, 'SIGKILL'); } catch { /* gone */ } });
  process.on('exit', stop);
  try {
    const [rrPort, nonePort] = (await Promise.all([rr.info, none.info])).map((i) => i.port);
    const total = quick ? 200 : 5000;
    const budget = (quick ? 4 : 15) * 1e9;
    const concurrency = 8;
    await load(rrPort, 50, concurrency, budget);
    await load(nonePort, 50, concurrency, budget);
    const rrRates = [];
    const noneRates = [];
    const fairness = [];
    for (let rep = 0; rep < (quick ? 1 : 3); rep++) {
      const r = await load(rrPort, total, concurrency, budget);
      rrRates.push(r.rate);
      fairness.push(r.fairness);
      noneRates.push((await load(nonePort, total, concurrency, budget)).rate);
    }
    emit('http.rr_conn_per_s', 'New connection per request, round-robin hand-off', 'per_s', 'higher', rrRates);
    emit('http.none_conn_per_s', 'New connection per request, shared listener (none)', 'per_s', 'higher', noneRates);
    emit('http.rr_fairness', 'Round-robin fairness (busiest / quietest worker)', 'ratio', 'lower', fairness);
  } finally {
    stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
