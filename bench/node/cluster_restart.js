// cluster.*: Node's cluster module, workers listening on 127.0.0.1 (port 0,
// shared through the primary). Figures (Node 20, 2 vCPUs): worker restart,
// kill to replacement listening, 55 ms (raw process start 0.5 ms).
//
//   cluster.restart_to_online  SIGKILL a worker; its 'exit' forks a replacement;
//                              time from the kill to the replacement's 'listening'
//   cluster.start_2_online     fork 2 workers to both 'online'
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const { quick, emit, now, watchdog, within } = require('./lib/common.js');

if (cluster.isWorker) {
  http.createServer((req, res) => res.end('ok')).listen(0, '127.0.0.1');
  return;
}

watchdog(quick ? 40 : 120);

function event(worker, name) {
  return new Promise((resolve) => worker.once(name, resolve));
}

async function startTwo() {
  const start = now();
  const workers = [cluster.fork(), cluster.fork()];
  // Both events are awaited from the fork on: 'listening' may follow 'online' at once.
  const listening = Promise.all(workers.map((w) => event(w, 'listening')));
  await within(30, Promise.all(workers.map((w) => event(w, 'online'))), 'online');
  const ms = (now() - start) / 1e6;
  await within(30, listening, 'listening');
  return { ms, workers };
}

async function restart(worker) {
  const start = now();
  const replaced = new Promise((resolve) => {
    worker.once('exit', () => {
      const replacement = cluster.fork();
      replacement.once('listening', () => resolve(replacement));
    });
  });
  worker.process.kill('SIGKILL');
  const replacement = await within(30, replaced, 'replacement');
  return { ms: (now() - start) / 1e6, replacement };
}

async function stop(workers) {
  await Promise.all(workers.map((w) => {
    const exited = event(w, 'exit');
    w.process.kill('SIGKILL');
    return within(10, exited, 'worker exit');
  }));
}

async function main() {
  const reps = quick ? 3 : 10;
  const starts = [];
  const restarts = [];
  for (let rep = 0; rep < reps; rep++) {
    const { ms, workers } = await startTwo();
    starts.push(ms);
    const { ms: restartMs, replacement } = await restart(workers[0]);
    restarts.push(restartMs);
    await stop([workers[1], replacement]);
  }
  emit('cluster.restart_to_online', 'Worker restart: kill to replacement listening', 'ms', 'lower', restarts);
  emit('cluster.start_2_online', 'Start 2 workers to both online', 'ms', 'lower', starts);
}

main().catch((e) => {
  console.error(e);
  for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
  process.exit(1);
});
