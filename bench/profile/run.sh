#!/usr/bin/env bash
# Profiles of the bench rows that miss their targets (issue 15): where the
# CPU time goes, per started cluster and per round-robin connection, ours
# beside the raw baseline. Needs `perf` (software clock: no hardware
# counters required) and python3; run it on a quiet machine:
#
#     bench/profile/run.sh            # writes target/profile/*.txt
#
# Each profile is `perf record -a -g` of the bench binary run with `--only
# <figure>` (about 5 s of that one workload), classified by
# bench/profile/classify.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/profile
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 1; }

bench_exe() { # <package> <bench>
    cargo bench -p "$1" --bench "$2" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$2"
}

# profile <name> <unit> <count regex> <exe> <args...>
profile() {
    local name=$1 unit=$2 regex=$3 exe=$4
    shift 4
    "$exe" --bench "$@" 2>"$out/$name.stderr" &
    local pid=$!
    # Past the servers' start-up; 3 s of the 5 s workload.
    sleep 1
    perf record -q -a -g -F 20000 -o "$out/$name.data" -- sleep 3 2>/dev/null &
    local perf=$!
    sleep 1
    ps -eLo pid,tid,comm,args >"$out/$name.threads"
    wait "$perf"
    wait "$pid"
    # The units done while perf ran: the rate over the whole run times the
    # 3 s recorded.
    local units
    units=$(python3 -c 'import re,sys
t = open(sys.argv[1]).read()
m = re.search(sys.argv[2], t)
n, secs = float(m.group(1)), float(m.group(2))
print(n / secs * 3)' "$out/$name.stderr" "$regex")
    python3 bench/profile/classify.py "$out/$name.data" "$out/$name.threads" "$pid" "$units" "$unit" |
        tee "$out/$name.txt"
}

cluster=$(bench_exe tests-integration cluster)
http=$(bench_exe cluster-core http)
echo "== starting a cluster of 2, then shutting it down (cluster.start_2_online)"
profile start "start" 'start: (\d+) clusters .* in ([\d.]+) s' "$cluster" --only start
echo "== round-robin hand-off, ours (http.rr_conn_per_s)"
profile rr "request" ': (\d+) requests .* in ([\d.]+) s' "$http" --only "ours rr"
echo "== round-robin hand-off, raw"
profile raw "request" ': (\d+) requests .* in ([\d.]+) s' "$http" --only "raw hand-off"
