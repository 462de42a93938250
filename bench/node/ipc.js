// ipc.*: Node's IPC channel between a parent and a child forked with
// child_process.fork and `serialization: 'json'` (Node's default, the one
// cluster uses for its messages). The small message is {seq, s} with a
// 32-character string. Figures (Node 20, 2 vCPUs): round trip both ends on one
// CPU 15.9 us (raw socketpair 7.8 us); one-way throughput 370k msg/s; 1 MiB
// round trip 6 ms.
//
//   ipc.rtt_small_pinned  round trip, both processes pinned to CPU 0 (taskset)
//   ipc.rtt_small         round trip, unpinned
//   ipc.throughput_small  one-way: the parent sends, the child counts
//   ipc.rtt_1mib          round trip of a message carrying 1 MiB of text
'use strict';

const { fork } = require('node:child_process');
const common = require('./lib/common.js');
const { quick, emit, now, watchdog, pin, allCpus, smallMessage, within } = common;

if (process.argv.includes('--child')) {
  let expected = 0;
  let received = 0;
  process.on('message', (msg) => {
    if (msg.kind === 'echo') {
      process.send(msg);
    } else if (msg.kind === 'count') {
      expected = msg.n;
      received = 0;
    } else if (msg.kind === 'exit') {
      process.disconnect();
    } else {
      received++;
      if (received === expected) process.send({ kind: 'counted', n: received });
    }
  });
  return;
}

watchdog(quick ? 40 : 150);

const reps = quick ? 2 : 5;

function child() {
  const c = fork(__filename, ['--child'], { serialization: 'json', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  return c;
}

function nextMessage(c) {
  return new Promise((resolve, reject) => {
    const onExit = () => reject(new Error('child exited'));
    c.once('exit', onExit);
    c.once('message', (m) => {
      c.off('exit', onExit);
      resolve(m);
    });
  });
}

/** Mean round trip (ns) of `count` echoes of `make(seq)`. */
async function roundTrips(c, count, make) {
  const start = now();
  for (let seq = 0; seq < count; seq++) {
    c.send({ kind: 'echo', body: make(seq) });
    await nextMessage(c);
  }
  return (now() - start) / count;
}

async function rtt(c, count) {
  await within(30, roundTrips(c, 50, smallMessage), 'warm-up');
  const values = [];
  for (let rep = 0; rep < reps; rep++) {
    values.push((await within(30, roundTrips(c, count, smallMessage), 'round trips')) / 1e3);
  }
  return values;
}

async function throughput(c, count) {
  const values = [];
  for (let rep = 0; rep < reps; rep++) {
    c.send({ kind: 'count', n: count });
    const counted = nextMessage(c);
    const start = now();
    for (let seq = 0; seq < count; seq++) c.send(smallMessage(seq));
    await within(60, counted, 'throughput');
    values.push(count / ((now() - start) / 1e9));
  }
  return values;
}

async function main() {
  const n = quick ? 200 : 5000;

  // Pinned: both ends on CPU 0, as the raw socketpair baseline.
  pin(process.pid, '0');
  let c = child();
  pin(c.pid, '0');
  const pinned = await rtt(c, n);
  c.send({ kind: 'exit' });
  pin(process.pid, allCpus());

  c = child();
  const unpinned = await rtt(c, n);
  const tput = await throughput(c, quick ? 2000 : 100000);
  const big = 'x'.repeat(1 << 20);
  const mib = [];
  await within(30, roundTrips(c, 2, () => big), '1 MiB warm-up');
  for (let rep = 0; rep < reps; rep++) {
    mib.push((await within(60, roundTrips(c, quick ? 3 : 20, () => big), '1 MiB round trips')) / 1e6);
  }
  c.send({ kind: 'exit' });

  emit('ipc.rtt_small_pinned', 'IPC round trip, small message, one CPU', 'us', 'lower', pinned);
  emit('ipc.rtt_small', 'IPC round trip, small message', 'us', 'lower', unpinned);
  emit('ipc.throughput_small', 'IPC one-way throughput, small messages', 'per_s', 'higher', tput);
  emit('ipc.rtt_1mib', 'IPC 1 MiB message round trip', 'ms', 'lower', mib);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
