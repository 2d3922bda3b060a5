#!/usr/bin/env python3
"""agent's load generator vs wrk against one local web app; see benches/loadgen.

The same 4 keep-alive connections each way: wrk -t2 -c4 for D seconds, and
`agent bench clusters --scale S --pause 0` (threads A and B of /cluster1 and /cluster2, each
sending its requests one after another). agent's rate is counted over the time all 4
streams ran (A's streams finish first: thread B sends 1.5x as many); wrk's over its run.
Rounds interleave the two. Peak memory and CPU time of agent come from wait4's rusage.
"""

import argparse
import csv
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_common import finish, loadavg, log, machine_line, run_wrk  # noqa: E402


def wrk_rate(out):
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"no Requests/sec in wrk's output: {out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return float(m.group(1)), int(bad.group(1)) if bad else 0


def agent_run(agent, url, scale, out_dir):
    """Runs agent bench clusters; (rate while all 4 streams ran, requests, errors, rusage)."""
    cmd = [agent, "bench", "clusters", "--url", url, "--scale", str(scale), "--pause", "0",
           "--json", "--out", out_dir]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    stdout, stderr = p.stdout.read(), p.stderr.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {stderr.strip()} {stdout[:300]}")
    summary = json.loads(stdout)
    # The window all four streams were sending: until the first one finished.
    until_ms = min(s["last_s"] for s in summary["streams"]) * 1000
    done = 0
    with open(os.path.join(out_dir, "requests.csv")) as f:
        for row in csv.DictReader(f):
            if float(row["start_ms"]) + float(row["latency_ms"]) <= until_ms and row["status"] == "200":
                done += 1
    errors = summary["sent"] - summary["ok"]
    return done / (until_ms / 1000), summary["sent"], errors, usage, summary["seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--web-pid", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--scale", type=float, default=100)
    ap.add_argument("--work", required=True)
    ap.add_argument("--note", action="append", default=[])
    a = ap.parse_args()
    started, load = datetime.datetime.now(datetime.timezone.utc), loadavg()
    errors = []
    # Warm-up of both (connections, the app's caches).
    run_wrk(a.url + "/cluster1", 2, 4, "2s", [])
    agent_run(a.agent, a.url, 1, os.path.join(a.work, "warmup"))
    wrk_rates, agent_rates, rss, cpu_per_req = [], [], [], []
    for r in range(1, a.rounds + 1):
        out, _ = run_wrk(a.url + "/cluster1", 2, 4, f"{a.duration}s", ["--latency"],
                         raw=os.path.join(a.work, f"wrk-r{r}.txt"))
        rate, bad = wrk_rate(out)
        if bad:
            errors.append(f"wrk round {r}: {bad} non-2xx answers")
        wrk_rates.append(rate)
        log(f"round {r}/{a.rounds} wrk -t2 -c4: {rate:,.0f} req/s")
        rate, sent, bad, usage, secs = agent_run(a.agent, a.url, a.scale, os.path.join(a.work, f"agent-r{r}"))
        if bad:
            errors.append(f"agent round {r}: {bad} failed requests")
        agent_rates.append(rate)
        rss.append(usage.ru_maxrss / 1024)
        cpu_per_req.append((usage.ru_utime + usage.ru_stime) / sent * 1e6)
        log(f"round {r}/{a.rounds} agent bench clusters: {rate:,.0f} req/s while 4 streams ran "
            f"({sent:,} requests in {secs:.1f} s, peak RSS {usage.ru_maxrss / 1024:.1f} MB)")
    w, g = statistics.median(wrk_rates), statistics.median(agent_rates)
    ratio = g / w
    out = [
        "### agent's load generator vs wrk: requests per second from one local agent-web, 4 keep-alive connections",
        "",
        machine_line(started, load),
        "",
        f"Medians of {a.rounds} interleaved rounds (each round: wrk for {a.duration} s, then agent bench clusters "
        f"--scale {a.scale:g} --pause 0: {int(2 * 2500 * a.scale):,} requests).",
        "",
        "| load generator | req/s | vs wrk | rounds | peak RSS | CPU per request |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
        f"| wrk -t2 -c4 | {w:,.0f} | 1.00× | {', '.join(f'{x:,.0f}' for x in wrk_rates)} | | |",
        f"| agent bench clusters | {g:,.0f} | {ratio:.2f}× | {', '.join(f'{x:,.0f}' for x in agent_rates)} | "
        f"{statistics.median(rss):.1f} MB | {statistics.median(cpu_per_req):.1f} µs |",
        "",
        f"Target (issue 6): at least 0.8× wrk: {'met' if ratio >= 0.8 else 'NOT met'} ({ratio:.2f}×).",
        "",
        "- wrk, agent and agent-web share the machine's cores: a load generator that costs more CPU per "
        "request leaves less to the server, which is what the ratio shows.",
        "- agent keeps every request (latency, status, which instance answered) for its report; wrk keeps a histogram.",
    ]
    sys.exit(finish(out, a.note, errors))


if __name__ == "__main__":
    main()
