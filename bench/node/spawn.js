// spawn.true_seq: spawn `/bin/true` and await its exit, one after the other
// (child_process.spawn, stdio ignored). Node 20 did ~830/s on a 2-vCPU box;
// the raw limit (bare posix_spawn + waitpid) ~2,000/s.
'use strict';

const { spawn } = require('node:child_process');
const { quick, emit, now, watchdog } = require('./lib/common.js');

watchdog(quick ? 30 : 120);

const reps = quick ? 2 : 5;
const count = quick ? 20 : 400;
const budgetNs = (quick ? 2 : 10) * 1e9;

function spawnTrue() {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/true', [], { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', resolve);
  });
}

async function main() {
  await spawnTrue(); // warm up
  const rates = [];
  for (let rep = 0; rep < reps; rep++) {
    const start = now();
    let done = 0;
    while (done < count && now() - start < budgetNs) {
      await spawnTrue();
      done++;
    }
    rates.push(done / ((now() - start) / 1e9));
  }
  emit('spawn.true_seq', 'Spawn + wait /bin/true, sequential', 'per_s', 'higher', rates);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
