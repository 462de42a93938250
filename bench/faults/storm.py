#!/usr/bin/env python3
"""Fault storms against hello-cluster, as an operator would run them.

Not a test (nothing here is asserted): a bounded measurement that prints
what clients saw per fault. Loopback only; every loop bounded in time.

    python3 bench/faults/storm.py <hello-cluster binary> kill  [seconds]
    python3 bench/faults/storm.py <hello-cluster binary> stop  [seconds]

`kill`: SIGKILL a random worker every 200-500 ms. `stop`: SIGSTOP one
worker for the whole run (and report the primary's peak descriptors).
Four client threads send `GET /` on a new connection each, with a 5 s
timeout: `ok`, `failed` (refused, reset, empty), `hung` (timed out).
"""
import os, random, re, signal, socket, subprocess, sys, threading, time

def main():
    binary, mode = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    env = dict(os.environ, PORT="0", WORKERS="4")
    demo = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, text=True)
    lines, addr = [], None
    for line in demo.stdout:
        lines.append(line)
        m = re.search(r"listening on http://([0-9.]+):(\d+)/", line)
        if m:
            addr = (m.group(1), int(m.group(2)))
        if sum("listening on" in l for l in lines) >= 4:
            break
    threading.Thread(target=lambda: [lines.append(l) for l in demo.stdout], daemon=True).start()

    stats = {"ok": 0, "failed": 0, "hung": 0}
    lock = threading.Lock()
    end = time.time() + seconds

    def client():
        while time.time() < end:
            outcome = "ok"
            try:
                s = socket.create_connection(addr, timeout=5)
                s.settimeout(5)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                s.close()
                if not data.startswith(b"HTTP/1.1 200"):
                    outcome = "failed"
            except socket.timeout:
                outcome = "hung"
            except OSError:
                outcome = "failed"
            with lock:
                stats[outcome] += 1

    def workers():
        out = subprocess.run(["pgrep", "-P", str(demo.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    faults, peak_fds, stopped = 0, 0, None
    if mode == "stop":
        stopped = random.choice(workers())
        os.kill(stopped, signal.SIGSTOP)
        faults = 1
    while time.time() < end:
        if mode == "kill":
            time.sleep(random.uniform(0.2, 0.5))
            pids = workers()
            if pids:
                try:
                    os.kill(random.choice(pids), signal.SIGKILL)
                    faults += 1
                except ProcessLookupError:
                    pass
        else:
            time.sleep(0.05)
        try:
            peak_fds = max(peak_fds, len(os.listdir(f"/proc/{demo.pid}/fd")))
        except OSError:
            pass
    for t in threads:
        t.join()
    alive = demo.poll() is None
    if stopped:
        try:
            os.kill(stopped, signal.SIGCONT)
        except ProcessLookupError:
            pass
    demo.send_signal(signal.SIGTERM)
    try:
        demo.wait(timeout=20)
    except subprocess.TimeoutExpired:
        demo.kill()
    text = "".join(lines)
    total = sum(stats.values())
    per = lambda n: n / faults if faults else float("nan")
    print(f"mode={mode} seconds={seconds:.0f} faults={faults} requests={total} "
          f"ok={stats['ok']} failed={stats['failed']} hung={stats['hung']} "
          f"failed_per_fault={per(stats['failed']):.2f} hung_per_fault={per(stats['hung']):.2f} "
          f"peak_primary_fds={peak_fds} primary_alive_at_end={alive} "
          f"gave_up_lines={text.count('gave up')} unresponsive_lines={text.count('unresponsive')}")

if __name__ == "__main__":
    main()
