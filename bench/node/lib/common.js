// Shared helpers of the Node.js counterparts of the workspace's benches.
//
// Every script prints, per figure, ONE JSON line on stdout:
//   {"id":"ipc.rtt_small","what":"...","unit":"us","better":"lower",
//    "node":15.9,"node_spread":0.8,"runtime":"node v20.x","reps":5}
// `node` is Node's figure: the median of the repetitions; `node_spread` is
// half their range ((max - min) / 2). Human-readable text goes to stderr.
'use strict';

const { execFileSync } = require('node:child_process');

const quick = process.argv.includes('--quick');

/** Median and half-range of a list of numbers. */
function stats(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, spread: (sorted[sorted.length - 1] - sorted[0]) / 2 };
}

/** Prints one figure line from the repetitions' values. */
function emit(id, what, unit, better, values) {
  const { median, spread } = stats(values);
  const round = (v) => Number(v.toPrecision(4));
  const line = {
    id, what, unit, better,
    node: round(median), node_spread: round(spread),
    runtime: `node ${process.version}`, reps: values.length,
  };
  process.stdout.write(JSON.stringify(line) + '\n');
  console.error(`${id}: ${round(median)} ± ${round(spread)} ${unit} (${values.length} reps)`);
}

/** Nanoseconds as a number, from the monotonic clock. */
function now() {
  return Number(process.hrtime.bigint());
}

/** Ends the script if it overstays `seconds` (every script is bounded). */
function watchdog(seconds) {
  setTimeout(() => {
    console.error(`${process.argv[1]}: gave up after ${seconds}s`);
    process.exit(3);
  }, seconds * 1000).unref();
}

/** Pins `pid` (its main thread, and threads it starts later) to `cpus` (e.g. "0"); false without taskset. */
function pin(pid, cpus) {
  try {
    execFileSync('taskset', ['-pc', cpus, String(pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Every CPU of the machine, as taskset's list ("0-1"). */
function allCpus() {
  return `0-${require('node:os').availableParallelism() - 1}`;
}

/** The small message of the IPC and thread rows: a sequence number and 32 characters. */
function smallMessage(seq) {
  return { seq, s: 'abcdefghijklmnopqrstuvwxyz012345' };
}

/** Rejects if `promise` takes longer than `seconds`. */
function within(seconds, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${seconds}s`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Start `script` again as a cluster server (`--server <policy>`, in its own
 * process group): the child, and the first line it prints (JSON: its port
 * and whatever else it tells), bounded.
 */
function startServer(script, policy) {
  const { spawn } = require('node:child_process');
  const child = spawn(process.execPath, [script, '--server', policy], {
    env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: policy },
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true,
  });
  const info = new Promise((resolve, reject) => {
    let text = '';
    child.stdout.on('data', (chunk) => {
      text += chunk;
      if (text.includes('\n')) resolve(JSON.parse(text.split('\n')[0]));
    });
    child.once('exit', () => reject(new Error(`${policy} server exited`)));
  });
  return { child, info: within(30, info, `${policy} server start`) };
}

module.exports = { quick, stats, emit, now, watchdog, pin, allCpus, smallMessage, within, startServer };
