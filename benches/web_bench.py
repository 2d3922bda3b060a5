#!/usr/bin/env python3
"""Loads agent-web and Flask+gunicorn with wrk, interleaved, and prints a Markdown report.

Called by benches/web (which installs the tools, builds agent-web and starts both servers):

    web_bench.py --server NAME=PORT:PID ... --expect BODY [--rounds R] [--conns 64,8]
                 [--duration 10s] [--threads 2] [--path /cluster1] [--raw DIR] [--note TEXT]

The first --server is the one the ratios are taken against. Before loading, every server must
answer GET /, /cluster1 and /cluster2 with 200 and exactly BODY (anything else is an error,
exit 1); again after the last run. Then one untimed 2 s warm-up per server and connection
level, then R rounds; in each round, for each connection level, every server in turn (A, B,
A, B, ...) gets `wrk -tT -cC -dD --latency http://127.0.0.1:PORT/PATH`. A run with non-2xx
answers or a wrk exit status other than 0 is an error. Per server and level: median req/s
and median p99 over the rounds. Peak RSS is read from /proc at the end: VmHWM summed over
the server's process and all its descendants (gunicorn's master and workers).
"""

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROUTES = ("/", "/cluster1", "/cluster2")
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def fetch(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def check(name, port, expect):
    """Every route answers 200 with exactly `expect`; returns a list of problems."""
    problems = []
    for route in ROUTES:
        url = f"http://127.0.0.1:{port}{route}"
        try:
            status, body = fetch(url)
        except OSError as e:
            problems.append(f"{name} {url}: {e}")
            continue
        if status != 200 or body != expect:
            problems.append(f"{name} {url}: {status} {body[:120]!r}, expected 200 {expect!r}")
    return problems


def descendants(pid):
    """pid and every process below it (gunicorn: the master and its workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def threads_of(pid):
    return status_kb(pid, "Threads")


def parse_wrk(text):
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    if not rps or not p99:
        raise ValueError("cannot parse wrk output:\n" + text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "p99_ms": float(p99.group(1)) * UNIT[p99.group(2)],
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "sock": tuple(int(x) for x in sock.groups()) if sock else (0, 0, 0, 0),
    }


def wrk(port, conns, args, duration, raw=None):
    cmd = ["wrk", f"-t{args.threads}", f"-c{conns}", f"-d{duration}", "--latency",
           f"http://127.0.0.1:{port}{args.path}"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if raw:
        with open(raw, "w") as f:
            f.write(" ".join(cmd) + "\n" + p.stdout + p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return parse_wrk(p.stdout)


def fmt_ms(ms):
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="append", required=True, help="NAME=PORT:PID")
    ap.add_argument("--expect", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", default="64,8")
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--path", default="/cluster1")
    ap.add_argument("--raw")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()

    servers = []
    for s in args.server:
        name, rest = s.rsplit("=", 1)
        port, pid = rest.split(":")
        servers.append({"name": name, "port": int(port), "pid": int(pid)})
    conns = [int(c) for c in args.conns.split(",")]
    base = servers[0]["name"]
    if args.raw:
        os.makedirs(args.raw, exist_ok=True)

    problems = [p for s in servers for p in check(s["name"], s["port"], args.expect)]
    if problems:
        for p in problems:
            log("ERROR " + p)
        return 1
    log(f"all servers answer {args.expect!r} on {', '.join(ROUTES)}")
    for s in servers:
        s["procs"] = descendants(s["pid"])
        s["threads"] = sum(threads_of(p) for p in s["procs"])

    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    started = datetime.datetime.now(datetime.timezone.utc)

    for c in conns:
        for s in servers:
            log(f"warm-up {s['name']} -c{c} 2s")
            wrk(s["port"], c, args, "2s")

    results = {(s["name"], c): [] for s in servers for c in conns}
    errors = []
    for r in range(1, args.rounds + 1):
        for c in conns:
            for s in servers:
                raw = f"{args.raw}/r{r}-c{c}-{s['name'].replace('+', '_').replace(' ', '_')}.txt" if args.raw else None
                res = wrk(s["port"], c, args, args.duration, raw)
                log(f"round {r}/{args.rounds} -c{c} {s['name']}: {res['rps']:.0f} req/s, "
                    f"p99 {fmt_ms(res['p99_ms'])}, non-2xx {res['non2xx']}, socket errors {res['sock']}")
                if res["non2xx"]:
                    errors.append(f"{s['name']} -c{c} round {r}: {res['non2xx']} non-2xx answers")
                results[(s["name"], c)].append(res)

    problems = [p for s in servers for p in check(s["name"], s["port"], args.expect)]
    errors += problems
    for s in servers:
        now = descendants(s["pid"])
        if sorted(now) != sorted(s["procs"]):
            errors.append(f"{s['name']}: processes changed during the run ({s['procs']} -> {now}); RSS is partial")
        s["hwm"] = sum(status_kb(p, "VmHWM") for p in now)
        s["pss"] = sum(pss_kb(p) for p in now)
        s["nprocs"] = len(now)

    ncpu = os.cpu_count()
    out = []
    out.append(f"### agent-web vs Flask+gunicorn: wrk -t{args.threads} -d{args.duration} --latency "
               f"GET {args.path}, {args.rounds} rounds interleaved")
    out.append("")
    out.append(f"{started:%Y-%m-%d %H:%M} UTC; {ncpu} cores (nproc), {cpu_model()}; "
               f"Linux {platform.release()}; load average before start {load}")
    out.append("")
    out.append(f"| server | connections | req/s (median) | p99 (median) | ratio req/s vs {base} | socket errors |")
    out.append("| --- | ---: | ---: | ---: | ---: | --- |")
    for c in conns:
        base_rps = statistics.median(x["rps"] for x in results[(base, c)])
        for s in servers:
            rs = results[(s["name"], c)]
            rps = statistics.median(x["rps"] for x in rs)
            p99 = statistics.median(x["p99_ms"] for x in rs)
            sock = [sum(x["sock"][i] for x in rs) for i in range(4)]
            sock_s = "none" if not any(sock) else ", ".join(
                f"{k} {v}" for k, v in zip(("connect", "read", "write", "timeout"), sock) if v)
            out.append(f"| {s['name']} | {c} | {rps:,.0f} | {fmt_ms(p99)} | {rps / base_rps:.2f}× | {sock_s} |")
    out.append("")
    out.append("| server | processes | threads | peak RSS (MB, sum of VmHWM) | PSS at end (MB) |")
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for s in servers:
        out.append(f"| {s['name']} | {s['nprocs']} | {s['threads']} | {s['hwm'] / 1024:.1f} | {s['pss'] / 1024:.1f} |")
    out.append("")
    for n in args.note:
        out.append(f"- {n}")
    if errors:
        out.append("")
        for e in errors:
            out.append(f"- ERROR: {e}")
    print("\n".join(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
