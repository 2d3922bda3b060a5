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
import re
import statistics
import sys

sys.dont_write_bytecode = True  # no __pycache__ in benches/
from bench_common import (  # noqa: E402
    descendants, finish, fmt_ms, http, log, log_errors, loadavg, machine_line, parse_servers, proc_field, run_wrk,
    sock_text, tree_memory,
)

ROUTES = ("/", "/cluster1", "/cluster2")
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def check(name, port, expect):
    """Every route answers 200 with exactly `expect`; returns a list of problems."""
    problems = []
    for route in ROUTES:
        url = f"http://127.0.0.1:{port}{route}"
        try:
            status, body = http("GET", url, timeout=5)
        except OSError as e:
            problems.append(f"{name} {url}: {e}")
            continue
        if status != 200 or body != expect:
            problems.append(f"{name} {url}: {status} {body[:120]!r}, expected 200 {expect!r}")
    return problems


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
    stdout, _ = run_wrk(f"http://127.0.0.1:{port}{args.path}", args.threads, conns, duration, ["--latency"], raw)
    return parse_wrk(stdout)


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

    servers = parse_servers(args.server)
    conns = [int(c) for c in args.conns.split(",")]
    base = servers[0]["name"]
    if args.raw:
        os.makedirs(args.raw, exist_ok=True)

    if log_errors([p for s in servers for p in check(s["name"], s["port"], args.expect)]):
        return 1
    log(f"all servers answer {args.expect!r} on {', '.join(ROUTES)}")
    for s in servers:
        s["procs"] = descendants(s["pid"])
        s["threads"] = sum(proc_field(p, "Threads") for p in s["procs"])

    load = loadavg()
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

    errors += [p for s in servers for p in check(s["name"], s["port"], args.expect)]
    for s in servers:
        tree_memory(s, errors)

    out = []
    out.append(f"### agent-web vs Flask+gunicorn: wrk -t{args.threads} -d{args.duration} --latency "
               f"GET {args.path}, {args.rounds} rounds interleaved")
    out.append("")
    out.append(machine_line(started, load))
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
            out.append(f"| {s['name']} | {c} | {rps:,.0f} | {fmt_ms(p99)} | {rps / base_rps:.2f}× | {sock_text(sock)} |")
    out.append("")
    out.append("| server | processes | threads | peak RSS (MB, sum of VmHWM) | PSS at end (MB) |")
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for s in servers:
        out.append(f"| {s['name']} | {s['nprocs']} | {s['threads']} | {s['hwm'] / 1024:.1f} | {s['pss'] / 1024:.1f} |")
    out.append("")
    return finish(out, args.note, errors)


if __name__ == "__main__":
    sys.exit(main())
