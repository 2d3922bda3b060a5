#!/usr/bin/env python3
"""Loads agent-orchestrator and HAProxy (the same queue in front of the same simulated
workers) with wrk, interleaved, and prints a Markdown report.

Called by benches/orchestrator (which installs the tools and starts the simulated workers,
the orchestrator and HAProxy):

    orchestrator_bench.py --server NAME=PORT:PID ... [--base NAME] [--served NAME]
        --worker-ports P,P,... --control PORT --sim-pid PID [--service 50ms,5ms] [--conns 32]
        [--duration 15s] [--single 5s] [--rounds 3] [--threads 2] [--raw DIR] [--note TEXT]

Every --server is a front door answering POST /new_request; --base (default: the first) is
the one ratios are taken against; --served names the one that must add worker, queued_ms
and inference_ms to the worker's answer (the orchestrator's `Served`) and whose GET /status
is read at the end. The simulated workers (benches/sim_worker.py) listen on --worker-ports;
their --control port sets the service time and counts what they served.

1. Every front door must answer POST /new_request {"text": "hello world"} with 200 and the
   worker's JSON ({"input_text": "x", "probabilities": [0.5, 0.5]}); again after the last run.
2. Per service time S: the simulated workers alone, `wrk -cK` for 3 s straight at one worker
   port (all K ports share one event loop, so this is the whole simulation's capacity): it
   must reach 90 % of K/S, else the simulation would be the bottleneck (error).
3. One untimed 2 s warm-up per front door and S; then R rounds; in each, for each S: one
   connection (`-t1 -c1 -d SINGLE`) to the bare worker and to each front door in turn (the
   per-request overhead, unloaded); K connections straight at one worker port for SINGLE
   (the floor: every worker busy all the time, no front door); then `wrk -tT -cC -dD` at
   each front door in turn (the closed loop: with C > K requests queue).
   Before each run the workers must be idle (a front door still serving an aborted run's
   queue would steal the next one's workers) and their counters are reset; half a second
   before a loaded run ends no worker may have more than one request in flight; no worker
   may see a mangled body. Non-2xx answers, socket errors or a wrk exit status other than 0
   are errors.
Per front door and S: medians over the rounds. Peak RSS (VmHWM) and CPU time from /proc.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in benches/
from bench_common import (  # noqa: E402
    finish, fmt_ms, http, log, log_errors, loadavg, machine_line, parse_servers, proc_field, run_wrk, sock_text,
)

BODY = b'{"text": "hello world"}'
WORKER_ANSWER = {"input_text": "x", "probabilities": [0.5, 0.5]}
SERVED_KEYS = ("worker", "queued_ms", "inference_ms")
LUA = r"""-- POST {"text": "hello world"} to the URL's path; done() prints one JSON line.
wrk.method = "POST"
wrk.body = '{"text": "hello world"}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""
TICK = os.sysconf("SC_CLK_TCK")
ALONE = "workers alone"


def ms_of(text):
    """'50ms', '5ms', '0.5s', '500us' or a bare number of milliseconds."""
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float(text)


def seconds_of(text):
    """wrk's duration: '15s', '2m', '1h' or a bare number of seconds."""
    for unit, f in (("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(unit):
            return float(text[:-1]) * f
    return float(text)


def fmt_s(ms):
    return f"{ms:g} ms" if ms >= 1 else f"{ms * 1000:g} µs"


class Sim:
    def __init__(self, control, ports, pid):
        self.url = f"http://127.0.0.1:{control}"
        self.ports = ports
        self.pid = pid

    def timing(self):
        status, body = http("GET", self.url + "/timing")
        if status != 200:
            raise RuntimeError(f"simulated workers' /timing: {status} {body[:200]}")
        return json.loads(body)

    def stats(self):
        status, body = http("GET", self.url + "/stats")
        if status != 200:
            raise RuntimeError(f"simulated workers' /stats: {status} {body[:200]}")
        return json.loads(body)

    def set_service(self, ms):
        status, body = http("POST", self.url + "/service", str(ms).encode())
        if status != 200:
            raise RuntimeError(f"simulated workers' /service: {status} {body[:200]}")

    def quiesce(self, limit=15.0):
        """Waits until no worker has a request in flight (for 50 ms); then resets counters."""
        deadline, idle_since = time.monotonic() + limit, None
        while True:
            now = time.monotonic()
            if self.stats()["in_flight"] == 0:
                idle_since = idle_since or now
                if now - idle_since >= 0.05:
                    break
            else:
                idle_since = None
            if now > deadline:
                raise RuntimeError(f"simulated workers still busy {limit:.0f} s after the last run")
            time.sleep(0.01)
        http("POST", self.url + "/reset", b"")


def check(name, port, served, worker_names):
    """POST /new_request gives 200 and the worker's JSON shape; returns a list of problems."""
    problems = []
    url = f"http://127.0.0.1:{port}/new_request"
    for _ in range(3):
        try:
            status, text = http("POST", url, BODY)
        except OSError as e:
            problems.append(f"{name} POST {url}: {e}")
            break
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict):
            problems.append(f"{name} POST {url}: {status} {text[:160]!r}, expected 200 and JSON")
            break
        got = {k: answer.get(k) for k in WORKER_ANSWER}
        if got != WORKER_ANSWER:
            problems.append(f"{name} POST {url}: {text[:160]!r} lacks the worker's {WORKER_ANSWER}")
        if served:
            if answer.get("worker") not in worker_names or not all(
                    isinstance(answer.get(k), (int, float)) for k in SERVED_KEYS[1:]):
                problems.append(f"{name} POST {url}: {text[:200]!r} lacks a worker of "
                                f"{sorted(worker_names)[:2]}... and numeric queued_ms, inference_ms")
        elif set(answer) != set(WORKER_ANSWER):
            problems.append(f"{name} POST {url}: {text[:160]!r} is not just the worker's answer")
    return problems


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wrk(url, threads, conns, duration, lua, raw=None, before_end=None):
    """One wrk run; `before_end()` is called half a second before the run ends (while the
    load is steady: when wrk stops, its connections close and front doors free the slots of
    requests still at a worker) and its value is the result's "before_end"."""
    def during():
        time.sleep(max(0.0, seconds_of(duration) - 0.5))
        return before_end()

    stdout, snapshot = run_wrk(url, threads, conns, duration, ["--timeout", "10s", "--latency", "-s", lua], raw,
                               during if before_end else None)
    line = next((l for l in stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        raise ValueError("no WRKJSON line in wrk's output:\n" + stdout)
    r = json.loads(line[len("WRKJSON "):])
    r["before_end"] = snapshot
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["sock"] = (r["connect"], r["read"], r["write"], r["timeout"])
    for k in ("p50", "p90", "p99", "max"):
        r[k + "_ms"] = r[k + "_us"] / 1000.0
    return r


def slot_ms(timing, gaps):
    """A worker's time per request as the simulated workers saw it: service plus idle."""
    return (timing["service"]["mean_us"] + timing[gaps]["mean_us"]) / 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="append", required=True, help="NAME=PORT:PID")
    ap.add_argument("--base")
    ap.add_argument("--served")
    ap.add_argument("--worker-ports", required=True)
    ap.add_argument("--control", type=int, required=True)
    ap.add_argument("--sim-pid", type=int, required=True)
    ap.add_argument("--service", default="50ms,5ms")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--duration", default="15s")
    ap.add_argument("--single", default="5s", help="one-connection run length; 0 skips them")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()

    servers = parse_servers(args.server)
    names = [s["name"] for s in servers]
    base = args.base or names[0]
    if base not in names or (args.served and args.served not in names):
        ap.error("--base and --served must name a --server")
    ports = [int(p) for p in args.worker_ports.split(",")]
    k, c = len(ports), args.conns
    services = [ms_of(x) for x in args.service.split(",")]
    single = args.single not in ("0", "0s")
    sim = Sim(args.control, ports, args.sim_pid)
    worker_names = {f"127.0.0.1:{p}" for p in ports}
    raw_dir = args.raw or tempfile.mkdtemp(prefix="orchestrator-bench-")
    os.makedirs(raw_dir, exist_ok=True)
    lua = os.path.join(raw_dir, "post.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    direct_url = f"http://127.0.0.1:{ports[0]}/run_model"

    def url(s):
        return f"http://127.0.0.1:{s['port']}/new_request"

    def tag(name):
        return "".join(ch if ch.isalnum() else "_" for ch in name)

    sim.set_service(services[0])
    if log_errors([p for s in servers for p in check(s["name"], s["port"], s["name"] == args.served, worker_names)]):
        return 1
    log(f"all front doors answer POST /new_request with 200 and the worker's JSON")
    for s in servers:
        s["threads"] = proc_field(s["pid"], "Threads")
        s["cpu0"] = proc_cpu_s(s["pid"])
    sim_cpu0 = proc_cpu_s(sim.pid)

    load = loadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    errors = []

    def after_run(label, r=None):
        """Checks the workers' counts; `r` (a front door's run) had a snapshot before its end."""
        st = sim.stats()
        if st["bad_bodies"]:
            errors.append(f"{label}: {st['bad_bodies']} requests reached a worker with a mangled body")
        if r and r["before_end"]:
            worst = max(r["before_end"]["max_in_flight"])
            if worst > 1:
                errors.append(f"{label}: a worker had {worst} requests in flight at once under load (1 slot each)")
        return st

    # ---- the simulation's own capacity, per service time
    ceiling = {}
    for S in services:
        sim.set_service(S)
        sim.quiesce()
        r = wrk(direct_url, args.threads, k, "3s", lua, f"{raw_dir}/sim-ceiling-S{S:g}ms.txt")
        after_run(f"simulated workers S={fmt_s(S)}")
        ceiling[S] = r
        ideal = k / (S / 1000.0)
        log(f"S={fmt_s(S)}: simulated workers alone (one port, -c{k}): {r['rps']:.0f} req/s "
            f"= {r['rps'] * S / 1000.0:.1f}x 1/S, {r['rps'] / ideal:.1%} of K/S {ideal:.0f}; p50 {fmt_ms(r['p50_ms'])}")
        if r["non2xx"] or any(r["sock"]):
            errors.append(f"simulated workers S={fmt_s(S)}: {r['non2xx']} non-2xx, socket errors {sock_text(r['sock'])}")
        if r["rps"] < 0.9 * ideal:
            errors.append(f"simulated workers S={fmt_s(S)}: one port sustains only {r['rps']:.0f} req/s "
                          f"with {k} connections, under 90 % of K/S = {ideal:.0f}: the simulation is the bottleneck")

    for S in services:
        sim.set_service(S)
        for s in servers:
            sim.quiesce()
            log(f"warm-up S={fmt_s(S)} {s['name']} -c{c} 2s")
            wrk(url(s), args.threads, c, "2s", lua)
            after_run(f"warm-up {s['name']}")

    loaded = {(s["name"], S): [] for s in servers for S in services}
    unloaded = {(n, S): [] for n in [ALONE] + names for S in services}
    floor = {S: [] for S in services}
    floor_duration = args.single if single else "5s"
    for rnd in range(1, args.rounds + 1):
        for S in services:
            sim.set_service(S)
            if single:
                for name, u in [(ALONE, direct_url)] + [(s["name"], url(s)) for s in servers]:
                    sim.quiesce()
                    label = f"round {rnd}/{args.rounds} S={fmt_s(S)} -c1 {name}"
                    r = wrk(u, 1, 1, args.single, lua, f"{raw_dir}/r{rnd}-S{S:g}ms-c1-{tag(name)}.txt")
                    after_run(label)
                    log(f"{label}: p50 {fmt_ms(r['p50_ms'])}, p99 {fmt_ms(r['p99_ms'])}")
                    if r["non2xx"] or any(r["sock"]):
                        errors.append(f"{label}: {r['non2xx']} non-2xx, socket errors {sock_text(r['sock'])}")
                    unloaded[(name, S)].append(r)
            # The floor: every worker busy all the time with no front door, K connections
            # straight at one worker port (all ports share one event loop).
            sim.quiesce()
            label = f"round {rnd}/{args.rounds} S={fmt_s(S)} -c{k} {ALONE} (one port)"
            r = wrk(direct_url, args.threads, k, floor_duration, lua, f"{raw_dir}/r{rnd}-S{S:g}ms-c{k}-alone.txt")
            after_run(label)
            r["timing"] = sim.timing()
            log(f"{label}: {r['rps']:.1f} req/s, mean latency {fmt_ms(r['mean_us'] / 1000)}")
            if r["non2xx"] or any(r["sock"]):
                errors.append(f"{label}: {r['non2xx']} non-2xx, socket errors {sock_text(r['sock'])}")
            floor[S].append(r)
            for s in servers:
                sim.quiesce()
                label = f"round {rnd}/{args.rounds} S={fmt_s(S)} -c{c} {s['name']}"
                cpu0, sim_cpu = proc_cpu_s(s["pid"]), proc_cpu_s(sim.pid)
                r = wrk(url(s), args.threads, c, args.duration, lua,
                        f"{raw_dir}/r{rnd}-S{S:g}ms-c{c}-{tag(s['name'])}.txt", sim.stats)
                r["cpu_s"] = proc_cpu_s(s["pid"]) - cpu0
                r["sim_cpu_s"] = proc_cpu_s(sim.pid) - sim_cpu
                st = after_run(label, r)
                r["served"] = st["served"]
                r["max_in_flight"] = max(r["before_end"]["max_in_flight"])
                r["max_in_flight_end"] = max(st["max_in_flight"])
                r["connections"] = sum(st["connections"])
                r["timing"] = sim.timing()
                log(f"{label}: {r['rps']:.1f} req/s ({r['rps'] / (k * 1000.0 / S):.1%} of K/S), "
                    f"p50 {fmt_ms(r['p50_ms'])}, p99 {fmt_ms(r['p99_ms'])}, non-2xx {r['non2xx']}, "
                    f"socket errors {sock_text(r['sock'])}")
                if r["non2xx"] or any(r["sock"]):
                    errors.append(f"{label}: {r['non2xx']} non-2xx, socket errors {sock_text(r['sock'])}")
                loaded[(s["name"], S)].append(r)

    sim.quiesce()
    sim.set_service(services[0])
    errors += [p for s in servers for p in check(s["name"], s["port"], s["name"] == args.served, worker_names)]
    for s in servers:
        s["hwm"] = proc_field(s["pid"], "VmHWM")
        s["threads_end"] = proc_field(s["pid"], "Threads")
        s["cpu_total"] = proc_cpu_s(s["pid"]) - s["cpu0"]
    sim_hwm, sim_cpu_total = proc_field(sim.pid, "VmHWM"), proc_cpu_s(sim.pid) - sim_cpu0
    orch_status = None
    if args.served:
        s = next(s for s in servers if s["name"] == args.served)
        status, text = http("GET", f"http://127.0.0.1:{s['port']}/status")
        if status == 200:
            orch_status = json.loads(text)
            if orch_status.get("failed") or orch_status.get("rejected"):
                errors.append(f"{args.served} /status: failed {orch_status.get('failed')}, "
                              f"rejected {orch_status.get('rejected')} (must be 0)")
        else:
            errors.append(f"{args.served} GET /status: {status} {text[:160]!r}")
    with open(f"{raw_dir}/results.json", "w") as f:
        json.dump({"loaded": {f"{n} S={S}": v for (n, S), v in loaded.items()},
                   "single": {f"{n} S={S}": v for (n, S), v in unloaded.items()},
                   "ceiling": {str(S): v for S, v in ceiling.items()},
                   "floor": {str(S): v for S, v in floor.items()},
                   "status": orch_status}, f, indent=1)

    # ---- report
    med = statistics.median
    others = [n for n in names if n != base]
    title = " vs ".join(names)
    out = [f"### {title}: the same FIFO queue in front of K={k} simulated workers (1 request each), "
           f"closed loop wrk -t{args.threads} -c{c} -d{args.duration}, {args.rounds} round{'s' * (args.rounds != 1)} interleaved",
           "",
           machine_line(started, load),
           "",
           f"Closed loop: {c} connections each send POST /new_request again as soon as the answer comes, "
           f"so {c - k} requests wait in the queue. Ideal throughput K/S; expected latency by Little's law "
           f"C/K × S (C ÷ measured req/s beside it). Medians over {args.rounds} round{'s' * (args.rounds != 1)}.",
           "",
           f"| S | front door | req/s | of ideal K/S | req/s vs {base} | p50 | p99 | expected C/K × S (C ÷ req/s) "
           f"| p99 vs {base} | non-2xx | socket errors |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    summary = {}
    for S in services:
        ideal = k * 1000.0 / S
        b = loaded[(base, S)]
        b_rps, b_p99 = med(x["rps"] for x in b), med(x["p99_ms"] for x in b)
        for n in names:
            rs = loaded[(n, S)]
            rps, p50, p99 = med(x["rps"] for x in rs), med(x["p50_ms"] for x in rs), med(x["p99_ms"] for x in rs)
            summary[(n, S)] = (rps, p50, p99)
            non2xx = sum(x["non2xx"] for x in rs)
            sock = tuple(sum(x["sock"][i] for x in rs) for i in range(4))
            out.append(f"| {fmt_s(S)} | {n} | {rps:,.1f} | {rps / ideal:.1%} | {rps / b_rps:.3f}× | {fmt_ms(p50)} "
                       f"| {fmt_ms(p99)} | {fmt_ms(c / k * S)} ({fmt_ms(c / rps * 1000)}) | {p99 / b_p99:.3f}× "
                       f"| {non2xx} | {sock_text(sock)} |")
    out.append("")
    out.append("Targets (issue): throughput ≥ 95 % of the ideal K/S; p99 ≤ HAProxy's.")
    out.append("")
    for S in services:
        ideal = k * 1000.0 / S
        b_rps, _, b_p99 = summary[(base, S)]
        for n in others:
            rps, _, p99 = summary[(n, S)]
            tp = "met" if rps >= 0.95 * ideal else "NOT met"
            lat = "met" if p99 <= b_p99 else "NOT met"
            out.append(f"- S = {fmt_s(S)}: {n} {rps / ideal:.1%} of {ideal:,.0f} req/s ({tp}; {base} "
                       f"{b_rps / ideal:.1%}, the workers alone {med(x['rps'] for x in floor[S]) / ideal:.1%}); p99 "
                       f"{fmt_ms(p99)} vs {base}'s {fmt_ms(b_p99)} ({lat}, {p99 - b_p99:+.2f} ms)")
    out.append("")
    out.append(f"Overhead, measured by the simulated workers under load (so neither the start nor the cut-off "
               f"of a wrk run skews it). *Service at the worker*: request received to answer written, S plus the "
               f"event loop's lateness (which grows when the front door leaves less CPU to the simulation). "
               f"*Worker idle between requests*: from writing an answer to receiving the worker's next request; "
               f"with requests always waiting, that is the front door's turnaround (reading the answer, freeing "
               f"the slot, sending the oldest waiting request) plus the simulation's own event-loop latency. "
               f"*Slot time* is their sum, the time a worker is taken per request: K ÷ slot time is the "
               f"throughput. The floor (workers alone) is wrk straight at one worker port with K={k} connections "
               f"({floor_duration} per round; all ports share one event loop), idle time per connection. "
               f"*One connection*: wrk -c1 "
               f"for {args.single} per round, no queue: p50 minus the bare worker's is what the front door adds "
               f"to one request. CPU per request: the front door process's user + system time over the requests "
               f"of the run.")
    out.append("")
    out.append("| S | front door | slot time per request | over workers alone | worker idle between requests, "
               "mean (p99) | service at the worker, mean | one connection p50 | added per request "
               "| CPU per request |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for S in services:
        fl = floor[S]
        floor_slot = med(slot_ms(x["timing"], "conn_gaps") for x in fl)
        alone_p50 = med(x["p50_ms"] for x in unloaded[(ALONE, S)]) if single else None
        svc = med(x["timing"]["service"]["mean_us"] for x in fl)
        gs = [x["timing"]["conn_gaps"] for x in fl]
        gap = f"{med(g['mean_us'] for g in gs):.0f} µs ({med(g['p99_us'] for g in gs):.0f} µs)"
        out.append(f"| {fmt_s(S)} | {ALONE} | {fmt_ms(floor_slot)} | – | {gap} | {fmt_ms(svc / 1000)} | "
                   f"{fmt_ms(alone_p50) if single else '–'} | – | – |")
        for n in names:
            rs = loaded[(n, S)]
            slot = med(slot_ms(x["timing"], "gaps") for x in rs)
            gs = [x["timing"]["gaps"] for x in rs if x["timing"]["gaps"].get("count")]
            gap = f"{med(g['mean_us'] for g in gs):.0f} µs ({med(g['p99_us'] for g in gs):.0f} µs)" if gs else "–"
            svc = med(x["timing"]["service"]["mean_us"] for x in rs)
            one = med(x["p50_ms"] for x in unloaded[(n, S)]) if single else None
            added = f"{(one - alone_p50) * 1000:+.0f} µs" if single else "–"
            cpu = med(x["cpu_s"] / x["requests"] * 1e6 for x in rs if x["requests"])
            out.append(f"| {fmt_s(S)} | {n} | {fmt_ms(slot)} | {(slot - floor_slot) * 1000:+.0f} µs | {gap} "
                       f"| {fmt_ms(svc / 1000)} | {fmt_ms(one) if single else '–'} | {added} | {cpu:.0f} µs |")
    out.append("")
    out.append("Checks per loaded run. *Max in flight per worker*: read half a second before the run ends (more "
               "than 1 is an error); in brackets, at the very end, when wrk closes its connections and a front "
               "door may free the slot of a request still at its worker and hand that worker another. "
               "*Connections to workers*: the most the workers accepted in one run (kept alive, so about 0 after "
               "the warm-up).")
    out.append("")
    out.append("| S | front door | max in flight per worker (at the end) | connections to workers "
               "| requests per worker, min–max | non-2xx |")
    out.append("| --- | --- | ---: | ---: | --- | ---: |")
    for S in services:
        for n in names:
            rs = loaded[(n, S)]
            maxin = f"{max(x['max_in_flight'] for x in rs)} ({max(x['max_in_flight_end'] for x in rs)})"
            conns = max(x["connections"] for x in rs)
            spread = f"{min(min(x['served']) for x in rs):,}–{max(max(x['served']) for x in rs):,}"
            out.append(f"| {fmt_s(S)} | {n} | {maxin} | {conns} | {spread} | {sum(x['non2xx'] for x in rs)} |")
    out.append("")
    out.append("| process | threads | peak RSS (VmHWM) | CPU time over the whole run |")
    out.append("| --- | ---: | ---: | ---: |")
    for s in servers:
        out.append(f"| {s['name']} | {s['threads_end']} | {s['hwm'] / 1024:.1f} MB | {s['cpu_total']:.1f} s |")
    out.append(f"| simulated workers (Python asyncio, all {k}) | 1 | {sim_hwm / 1024:.1f} MB | {sim_cpu_total:.1f} s |")
    out.append("")
    for S in services:
        r = ceiling[S]
        out.append(f"- Simulated workers at S = {fmt_s(S)}, checked before the rounds: one port with {k} connections sustains "
                   f"{r['rps']:,.0f} req/s = {r['rps'] * S / 1000:.1f}× 1/S ({r['rps'] / (k * 1000.0 / S):.1%} of K/S; "
                   f"p50 {fmt_ms(r['p50_ms'])}: timer and HTTP overhead on top of S).")
    if orch_status:
        ws = orch_status.get("workers", [])
        out.append(f"- {args.served} GET /status at the end: served {orch_status.get('served'):,}, failed "
                   f"{orch_status.get('failed')}, rejected {orch_status.get('rejected')}; per worker served "
                   f"{min(w['served'] for w in ws):,}–{max(w['served'] for w in ws):,}, failures "
                   f"{sum(w['failures'] for w in ws)}.")
    return finish(out, args.note, errors)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, ValueError, OSError) as e:
        log(f"ERROR {e}")
        sys.exit(1)
