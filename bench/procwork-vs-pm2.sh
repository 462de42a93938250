#!/usr/bin/env bash
# procwork against PM2 7 in cluster mode, serving the same Node.js app
# (procwork/examples/app.js), on loopback. One command:
#
#   bash bench/procwork-vs-pm2.sh [--quick] [--out FILE]
#
# Installs what it needs if missing (PM2 7 with npm, wrk with apt-get),
# builds procwork in release mode, then for each manager, 2 workers each:
#   1. requests/s and p99 with no reload (wrk, 2 threads, 16 keep-alive
#      connections, 10 s);
#   2. failed requests over 6 reloads under that keep-alive load;
#   3. failed requests over 6 reloads under a connection-per-request load
#      (wrk with `Connection: close`);
#   4. the manager's own resident memory (procwork; PM2's daemon);
#   5. kill -9 of a worker -> a request answered by its replacement;
#   6. failed requests over 6 reloads under keep-alive load when the app
#      drains as most do, with http.Server's close() (APP_DRAIN=close).
# A failed request is one wrk counts as a socket error (connect, read,
# write, timeout) or a non-2xx answer. Every phase is bounded in time; only
# 127.0.0.1 is used. The Markdown report goes to stdout and to FILE
# (default bench/results/procwork-vs-pm2.md). MANAGERS=pm2 (or procwork)
# measures only one, for debugging.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
OUT="$ROOT/bench/results/procwork-vs-pm2.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
STEADY=10; RELOADS=6; RELOAD_GAP=1
[ "$QUICK" = 1 ] && { STEADY=3; RELOADS=2; }
PORT_PW=39401
PORT_PM2=39402

# --- what it needs -----------------------------------------------------
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
command -v node >/dev/null || { echo "node is required (Node.js 18+)" >&2; exit 1; }
if ! command -v wrk >/dev/null; then
  $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y wrk
fi
if ! command -v pm2 >/dev/null || [ "$(pm2 --version 2>/dev/null | tail -1 | cut -d. -f1)" != 7 ]; then
  npm i -g pm2@7
fi
cargo build --release -p procwork >&2
PROCWORK="$ROOT/target/release/procwork"
APP_DIR="$ROOT/procwork/examples"
WORK=$(mktemp -d /tmp/procwork-vs-pm2.XXXXXX)
chmod 700 "$WORK"
export PM2_HOME="$WORK/pm2"
export XDG_RUNTIME_DIR="$WORK"
PW_PID=""

cleanup() {
  [ -n "$PW_PID" ] && kill -TERM "$PW_PID" 2>/dev/null && wait "$PW_PID" 2>/dev/null || true
  pm2 kill >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "== $*" >&2; }

# Waits (bounded) until 127.0.0.1:$1 answers.
wait_serving() {
  for _ in $(seq 1 300); do
    curl -s -m 1 "http://127.0.0.1:$1/" >/dev/null && return 0
    sleep 0.1
  done
  echo "nothing serves on port $1" >&2; return 1
}

# The pids of the workers the manager reports serving, space-separated.
worker_pids() {
  if [ "$1" = procwork ]; then
    "$PROCWORK" status --json --name bench | node -e '
      const s = JSON.parse(require("fs").readFileSync(0));
      console.log(s.workers.filter(w => w.state === "ready").map(w => w.pid).join(" "))'
  else
    pm2 jlist 2>/dev/null | node -e '
      const l = JSON.parse(require("fs").readFileSync(0));
      console.log(l.filter(p => p.pm2_env.status === "online").map(p => p.pid).join(" "))'
  fi
}

# wrk's summary -> "rps p99_ms failed"
parse_wrk() {
  awk '
    /Requests\/sec:/ { rps = $2 }
    /^ +99%/ { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); p99 = v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); p99 = v } else if (v ~ /s$/) { sub(/s$/, "", v); p99 = v * 1000 } }
    /Socket errors:/ { gsub(/,/, ""); failed += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { failed += $5 }
    END { printf "%s %s %d\n", rps + 0, p99 + 0, failed }' "$1"
}

# One manager's run. $1 = procwork | pm2.
measure() {
  local who=$1 port reload pids_cmd mgr_pid
  start_manager "$who" drain
  if [ "$who" = procwork ]; then
    port=$PORT_PW
    reload() { "$PROCWORK" reload --name bench >/dev/null; }
    mgr_pid=$PW_PID
  else
    port=$PORT_PM2
    reload() { pm2 reload bench >/dev/null 2>&1; }
    mgr_pid=$(cat "$PM2_HOME/pm2.pid")
  fi
  local url="http://127.0.0.1:$port/"

  log "$who: steady load, ${STEADY}s"
  wrk -t2 -c16 -d"${STEADY}s" --latency "$url" >"$WORK/$who-steady.txt"
  read -r rps p99 steady_failed < <(parse_wrk "$WORK/$who-steady.txt")

  local dur=$((RELOADS * 4 + 6))
  log "$who: $RELOADS reloads under keep-alive load"
  wrk -t2 -c16 -d"${dur}s" --timeout 10s "$url" >"$WORK/$who-ka.txt" &
  local wrk_pid=$!
  sleep 2
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq 1 "$RELOADS"); do reload; sleep "$RELOAD_GAP"; done
  t1=$(date +%s.%N)
  wait $wrk_pid
  read -r _ _ ka_failed < <(parse_wrk "$WORK/$who-ka.txt")
  local reload_s
  reload_s=$(echo "($t1 - $t0) / $RELOADS - $RELOAD_GAP" | bc -l)

  log "$who: $RELOADS reloads under connection-per-request load"
  wrk -t2 -c16 -d"${dur}s" --timeout 10s -H "Connection: close" "$url" >"$WORK/$who-pr.txt" &
  wrk_pid=$!
  sleep 2
  for _ in $(seq 1 "$RELOADS"); do reload; sleep "$RELOAD_GAP"; done
  wait $wrk_pid
  read -r pr_rps _ pr_failed < <(parse_wrk "$WORK/$who-pr.txt")

  local rss_kb
  rss_kb=$(awk '/VmRSS/ { print $2 }' "/proc/$mgr_pid/status")

  log "$who: kill -9 of a worker"
  # From the kill until a request (a new connection each) is answered by
  # a pid that is neither the victim nor the surviving worker: polled
  # with curl back to back, bounded at 3000 requests.
  local victim survivor before replaced_ms="" pids
  pids=$(worker_pids "$who")
  victim=${pids%% *}
  survivor=${pids##* }
  before=$(date +%s%N)
  kill -9 "$victim"
  for _ in $(seq 1 3000); do
    local body pid
    body=$(curl -s -m 2 -H "Connection: close" "$url" || true)
    pid=${body##* }
    if [ -n "$pid" ] && [ "$pid" != "$victim" ] && [ "$pid" != "$survivor" ]; then
      replaced_ms=$(( ($(date +%s%N) - before) / 1000000 ))
      break
    fi
  done

  stop_manager "$who"

  # The same keep-alive reloads with the app drained as most apps do it:
  # http.Server's close(), which also closes idle kept-alive connections.
  log "$who: $RELOADS reloads under keep-alive load, app draining with server.close()"
  start_manager "$who" close
  wrk -t2 -c16 -d"${dur}s" --timeout 10s "$url" >"$WORK/$who-close.txt" &
  wrk_pid=$!
  sleep 2
  for _ in $(seq 1 "$RELOADS"); do reload; sleep "$RELOAD_GAP"; done
  wait $wrk_pid
  read -r _ _ close_failed < <(parse_wrk "$WORK/$who-close.txt")
  stop_manager "$who"

  printf '%s %s %s %s %s %s %s %s %s %s\n' "$who" "$rps" "$p99" "$ka_failed" "$pr_failed" "$pr_rps" "$rss_kb" "${replaced_ms:-none}" "$reload_s" "$close_failed" >>"$WORK/rows"
}

stop_manager() {
  if [ "$1" = procwork ]; then
    kill -TERM "$PW_PID"; wait "$PW_PID" || true; PW_PID=""
  else
    pm2 delete bench >/dev/null 2>&1 || true
  fi
}

# Starts manager $1 with 2 workers of the app (APP_DRAIN=$2), and waits
# until it serves.
start_manager() {
  if [ "$1" = procwork ]; then
    (cd "$APP_DIR" && APP_DRAIN=$2 exec "$PROCWORK" run -w 2 --name bench --listen "tcp://127.0.0.1:$PORT_PW" -- node app.js) 2>>"$WORK/procwork.log" &
    PW_PID=$!
    wait_serving "$PORT_PW"
  else
    (cd "$APP_DIR" && APP_DRAIN=$2 PORT=$PORT_PM2 pm2 start app.js -i 2 --wait-ready --name bench --update-env >/dev/null)
    if ! wait_serving "$PORT_PM2"; then
      # Seen once in a while on this machine: PM2's workers fail to listen
      # (EADDRINUSE from the cluster's primary handle); a second start works.
      log "pm2 did not serve; starting it again"
      pm2 delete bench >/dev/null 2>&1 || true
      (cd "$APP_DIR" && APP_DRAIN=$2 PORT=$PORT_PM2 pm2 start app.js -i 2 --wait-ready --name bench --update-env >/dev/null)
      wait_serving "$PORT_PM2"
    fi
  fi
  sleep 1
}

: >"$WORK/rows"
for who in ${MANAGERS:-pm2 procwork}; do measure "$who"; done

NODE_V=$(node --version); PM2_V=$(pm2 --version | tail -1); WRK_V=$( (wrk --version 2>&1 || true) | head -1 | awk '{print $2}')
{
  echo "# procwork vs PM2 $PM2_V (cluster mode), same Node.js app"
  echo
  echo "Measured by \`bash bench/procwork-vs-pm2.sh$( [ "$QUICK" = 1 ] && echo ' --quick')\` on $(nproc) CPUs, $(date -u +%Y-%m-%d), Node.js $NODE_V, wrk $WRK_V."
  echo "The app is \`procwork/examples/app.js\`, 2 workers under each manager: \`procwork run -w 2 --listen tcp://127.0.0.1:PORT -- node app.js\`"
  echo "and \`pm2 start app.js -i 2 --wait-ready\` (each with its defaults: procwork's 10 s grace, PM2's 1.6 s kill timeout)."
  echo "Load: wrk, 2 threads, 16 connections, loopback. $RELOADS reloads, ${RELOAD_GAP} s apart."
  echo
  echo "| | procwork | PM2 | procwork / PM2 |"
  echo "|---|---|---|---|"
  awk '
    { i = ($1 == "procwork") ? 1 : 2; rps[i] = $2; p99[i] = $3; ka[i] = $4; pr[i] = $5; prr[i] = $6; rss[i] = $7; kill[i] = $8; rl[i] = $9; cl[i] = $10 }
    function ratio(a, b) { return (b + 0 > 0) ? sprintf("%.2f×", a / b) : "—" }
    END {
      printf "| failed requests, %s reloads, keep-alive load | %d | %d | |\n", '"$RELOADS"', ka[1], ka[2]
      printf "| failed requests, %s reloads, connection-per-request load | %d | %d | |\n", '"$RELOADS"', pr[1], pr[2]
      printf "| failed requests, %s reloads, keep-alive load, app draining with `server.close()` | %d | %d | |\n", '"$RELOADS"', cl[1], cl[2]
      printf "| requests/s, keep-alive, no reload | %.0f | %.0f | %s |\n", rps[1], rps[2], ratio(rps[1], rps[2])
      printf "| p99 latency, keep-alive, no reload | %.2f ms | %.2f ms | %s |\n", p99[1], p99[2], ratio(p99[1], p99[2])
      printf "| requests/s, connection per request, during reloads | %.0f | %.0f | %s |\n", prr[1], prr[2], ratio(prr[1], prr[2])
      printf "| the manager'"'"'s own resident memory | %.1f MiB | %.1f MiB | %s |\n", rss[1] / 1024, rss[2] / 1024, ratio(rss[1], rss[2])
      printf "| kill -9 of a worker → a request answered by its replacement | %s ms | %s ms | %s |\n", kill[1], kill[2], ratio(kill[1], kill[2])
      printf "| one reload of 2 workers (wall time) | %.2f s | %.2f s | %s |\n", rl[1], rl[2], ratio(rl[1], rl[2])
    }' "$WORK/rows"
} | tee "$OUT"
