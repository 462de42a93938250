// threads.*: Node's worker_threads. The small message is {seq, s} with a
// 32-character string, sent with postMessage (structured clone). Figures
// (Node 20, 2 vCPUs): round trip on one CPU 12.4 us (raw eventfd 3.7 us);
// one-way throughput 1M msg/s; thread start to first message 14.6 ms;
// fib(30) x 64 tasks on 2 threads over 1: 1.93.
//
//   threads.rtt_pinned                 round trip, process pinned to CPU 0 first
//   threads.rtt                        round trip, unpinned
//   threads.throughput                 one-way: main sends, the worker counts
//   threads.start_to_first_msg         new Worker() to its first message
//   threads.pool_speedup_fib30         64 fib(30) tasks: time on 1 thread / on 2
'use strict';

const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
const { quick, emit, now, watchdog, pin, allCpus, smallMessage, within } = require('./lib/common.js');

function fib(n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

if (!isMainThread) {
  if (workerData === 'first') {
    parentPort.postMessage('up');
  } else {
    let expected = 0;
    let received = 0;
    parentPort.on('message', (msg) => {
      if (msg.kind === 'echo') {
        parentPort.postMessage(msg);
      } else if (msg.kind === 'count') {
        expected = msg.n;
        received = 0;
      } else if (msg.kind === 'fib') {
        parentPort.postMessage(fib(msg.n));
      } else if (msg.kind === 'exit') {
        parentPort.close();
      } else {
        received++;
        if (received === expected) parentPort.postMessage({ kind: 'counted', n: received });
      }
    });
  }
  return;
}

watchdog(quick ? 40 : 200);

const reps = quick ? 2 : 5;

function next(w) {
  return new Promise((resolve, reject) => {
    const onError = (e) => reject(e);
    w.once('error', onError);
    w.once('message', (m) => {
      w.off('error', onError);
      resolve(m);
    });
  });
}

async function roundTrips(w, count) {
  const start = now();
  for (let seq = 0; seq < count; seq++) {
    w.postMessage({ kind: 'echo', body: smallMessage(seq) });
    await next(w);
  }
  return (now() - start) / count;
}

async function rtt(count) {
  const w = new Worker(__filename);
  await within(30, roundTrips(w, 50), 'warm-up');
  const values = [];
  for (let rep = 0; rep < reps; rep++) {
    values.push((await within(30, roundTrips(w, count), 'round trips')) / 1e3);
  }
  await w.terminate();
  return values;
}

async function throughput(count) {
  const w = new Worker(__filename);
  const values = [];
  for (let rep = 0; rep < reps; rep++) {
    w.postMessage({ kind: 'count', n: count });
    const counted = next(w);
    const start = now();
    for (let seq = 0; seq < count; seq++) w.postMessage(smallMessage(seq));
    await within(60, counted, 'throughput');
    values.push(count / ((now() - start) / 1e9));
  }
  await w.terminate();
  return values;
}

async function startToFirst(count) {
  const values = [];
  for (let rep = 0; rep < count; rep++) {
    const start = now();
    const w = new Worker(__filename, { workerData: 'first' });
    await within(30, next(w), 'first message');
    values.push((now() - start) / 1e3);
    await w.terminate();
  }
  return values;
}

/** Seconds to run `tasks` fib(n) tasks on `threads` workers, each taking the next task when done. */
async function pool(threads, tasks, n) {
  const workers = Array.from({ length: threads }, () => new Worker(__filename));
  for (const w of workers) await within(30, (w.postMessage({ kind: 'fib', n: 1 }), next(w)), 'pool warm-up');
  let left = tasks;
  const start = now();
  await within(120, Promise.all(workers.map(async (w) => {
    while (left > 0) {
      left--;
      w.postMessage({ kind: 'fib', n });
      await next(w);
    }
  })), 'pool');
  const seconds = (now() - start) / 1e9;
  await Promise.all(workers.map((w) => w.terminate()));
  return seconds;
}

async function main() {
  const n = quick ? 200 : 5000;
  pin(process.pid, '0');
  const pinned = await rtt(n);
  pin(process.pid, allCpus());
  const unpinned = await rtt(n);
  const tput = await throughput(quick ? 2000 : 200000);
  const start = await startToFirst(quick ? 3 : 15);

  const [tasks, fibN] = quick ? [8, 22] : [64, 30];
  const speedups = [];
  for (let rep = 0; rep < (quick ? 1 : 3); rep++) {
    const one = await pool(1, tasks, fibN);
    const two = await pool(2, tasks, fibN);
    speedups.push(one / two);
  }

  emit('threads.rtt_pinned', 'Thread message round trip, one CPU', 'us', 'lower', pinned);
  emit('threads.rtt', 'Thread message round trip', 'us', 'lower', unpinned);
  emit('threads.throughput', 'Thread one-way throughput', 'per_s', 'higher', tput);
  emit('threads.start_to_first_msg', 'Thread start to first message', 'us', 'lower', start);
  emit('threads.pool_speedup_fib30', 'CPU-bound speedup, 2 threads over 1 (fib(30) x 64)', 'ratio', 'higher', speedups);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
