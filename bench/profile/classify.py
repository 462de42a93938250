#!/usr/bin/env python3
"""Where the CPU time of a profiled bench run goes, per unit of work.

Usage: classify.py <perf.data> <threads.txt> <bench pid> <units> <unit name>

<threads.txt> is `ps -eLo pid,tid,comm,args` taken while the bench ran.
Every sample of `perf record -a -g -F 20000` is given to a role (which
process and thread) and to a bucket (the first of a list of kernel and
library functions found on its stack), and the totals are printed in
microseconds of CPU per unit (a started cluster, a request).
"""
import collections
import re
import subprocess
import sys

HZ = 20000
BUCKETS = [
    ("fork (clone, copy page tables)", "copy_process"),
    ("exec", "bprm_execve"),
    ("dynamic loader", "_dl_"),
    ("process exit", "do_exit"),
    ("page faults", "exc_page_fault"),
    ("accept", "__sys_accept4"),
    ("tcp connect", "tcp_v4_connect"),
    ("sendmsg", "sendmsg"),
    ("recvmsg", "recvmsg"),
    ("shutdown", "__sys_shutdown"),
    ("close", "__x64_sys_close"),
    ("read", "ksys_read"),
    ("write", "ksys_write"),
    ("epoll_wait", "do_epoll_wait"),
    ("epoll_ctl", "do_epoll_ctl"),
    ("futex", "futex"),
    ("network softirq", "net_rx_action"),
    ("scheduler", "schedule"),
    ("idle", "do_idle"),
    ("tokio", "tokio::"),
    ("cluster crates", "cluster_"),
    ("malloc", "malloc"),
]


def main():
    data, threads, bench_pid, units, unit = sys.argv[1:6]
    bench_pid, units = int(bench_pid), float(units)
    known = {}
    for line in open(threads):
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[0].isdigit():
            known[int(parts[1])] = (int(parts[0]), parts[2], parts[3].strip())
    args_of = {p: a for p, _, a in known.values()}
    bench_exe = args_of.get(bench_pid, "?").split()[0]
    script = subprocess.run(
        ["perf", "script", "-i", data, "-F", "pid,tid,comm,ip,sym,dso"],
        capture_output=True, text=True, check=True,
    ).stdout
    totals = collections.Counter()
    buckets = collections.defaultdict(collections.Counter)
    head = re.compile(r"\s*(.*?)\s+(-?\d+)/(-?\d+)\s*$")
    sample = None

    def account(s):
        if s is None:
            return
        comm, pid, tid, frames = s
        if comm == "swapper" or pid == 0:
            role = "idle CPU"
        elif pid == bench_pid:
            if tid in known:
                role = f"bench process: {known[tid][1]}"
            else:
                role = "bench process: client thread"
        elif pid in args_of and args_of[pid].split()[0] == bench_exe:
            kind = "raw worker" if "--raw-worker" in args_of[pid] else "worker"
            role = f"{kind}: {comm}"
        elif args_of.get(pid, "").startswith("["):
            role = f"kernel thread: {comm}"
        else:
            # Not running when the threads were listed: the short-lived
            # processes (a started cluster's workers) and the rest.
            role = f"process: {comm}"
        totals[role] += 1
        text = " ".join(frames)
        for name, pattern in BUCKETS:
            if pattern in text:
                buckets[role][name] += 1
                break
        else:
            top = frames[0].split() if frames else []
            buckets[role]["other: " + (top[1] if len(top) > 1 else "?")] += 1

    for line in script.splitlines():
        if not line.strip():
            account(sample)
            sample = None
        elif not line[0].isspace():
            m = head.match(line.rstrip())
            sample = (m.group(1), int(m.group(2)), int(m.group(3)), []) if m else None
        elif sample is not None:
            sample[3].append(line.strip())
    account(sample)

    per = 1e6 / HZ / units
    busy = sum(n for r, n in totals.items() if r != "idle CPU")
    print(f"CPU busy: {busy * per:.1f} us per {unit} ({units:.0f} {unit}s)")
    for role, n in totals.most_common():
        if n * per < 0.05 * busy * per / 10:
            continue
        print(f"  {role}: {n * per:.2f} us per {unit}")
        for name, m in buckets[role].most_common(8):
            if m * per >= 0.1:
                print(f"      {name:34s} {m * per:.2f}")


if __name__ == "__main__":
    main()
