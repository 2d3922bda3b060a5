#!/usr/bin/env python3
"""Times agent-worker and the lab's PyTorch worker on POST /run_model, interleaved, and prints
a Markdown report.

Called by benches/worker (which installs what is missing, makes the model and starts both
servers), with the torch venv's Python (it needs transformers for the tokenizer check):

    worker_bench.py --server NAME=PORT:PID ... [--start NAME=COMMAND ...] --model DIR
                    [--base NAME] [--threads N] [--rounds R] [--requests N] [--warmup 5]
                    [--lengths 16,64,128] [--tolerance 1e-4] [--raw DIR] [--note TEXT]

Texts: for each length L, a text whose input_ids (with [CLS] and [SEP]) are exactly L long,
checked with the model's tokenizer.json through transformers' PreTrainedTokenizerFast, as the
PyTorch worker tokenizes: words that are one token each, repeated.

Requests go one at a time (the orchestrator's load on a worker), over one HTTP/1.1 connection
per server, which http.client reopens whenever the server closes it (gunicorn's sync worker
does after every response); the report says which server kept it alive. Latency is the
client's, from sending the request to having read the whole answer. First `--warmup` requests
per server and length (checked, not timed), then R rounds; in each round, for each length,
every server in turn (A, B, A, B, ...) gets N requests. Per server and length: median and p90
over all R x N requests, and the spread of the round medians.

Every answer must be 200 with input_text equal to the text sent and probabilities (two, summing
to 1) within --tolerance of the first answer of the --base server for that text; anything
else is an error (exit 1, listed under the report).

Time to first answer (with --start): at the start of every round each such server is started
afresh from COMMAND (`{port}` is replaced by a free port), POST /run_model with the shortest
text is sent every 5 ms from the moment the process is spawned until an answer is 200, and the
process is stopped. Its answer is checked like the others.

Peak memory is read from /proc after the last run: VmHWM summed over the --server process and
all its descendants (gunicorn's master and its worker); PSS at the end alongside.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in benches/
from bench_common import descendants, finish, log, loadavg, parse_servers, proc_field, tree_memory  # noqa: E402

# Words that are one token in bert-base-uncased's vocabulary and in the benchmark model's.
WORDS = ("the", "model", "worker", "hello", "world", "test", "and", "this", "is", "of")


class BenchError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_texts(model_dir, lengths):
    """{L: text} with exactly L input_ids each, as the PyTorch worker's tokenizer counts."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
        unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"],
    )

    def count(text):
        return len(tokenizer(text)["input_ids"])

    words = [w for w in WORDS if count(w) == 3]
    if not words:
        raise BenchError(f"none of {WORDS} is one token in {model_dir}/tokenizer.json")
    texts = {}
    for n in lengths:
        if n < 3:
            raise BenchError(f"length {n}: needs at least one word between [CLS] and [SEP]")
        text = " ".join(words[i % len(words)] for i in range(n - 2))
        if count(text) != n:
            raise BenchError(f"length {n}: the text has {count(text)} input_ids")
        texts[n] = text
    return texts, words


class Client:
    """One server, one HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.reused = 0
        self.opened = 0

    def run_model(self, payload):
        """(seconds, status, body) of one POST /run_model."""
        if self.conn.sock is None:
            self.opened += 1
        else:
            self.reused += 1
        t0 = time.perf_counter()
        self.conn.request("POST", "/run_model", body=payload,
                          headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        body = r.read()
        t = time.perf_counter() - t0
        if r.will_close:
            self.conn.close()
        return t, r.status, body

    def close(self):
        self.conn.close()


def answer_problem(status, body, text):
    """The probabilities of a good answer, or a string saying what is wrong with it."""
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    try:
        a = json.loads(body)
        probs = a["probabilities"]
        if a["input_text"] != text:
            return f"input_text {a['input_text'][:60]!r} is not the text sent"
        if len(probs) != 2 or abs(sum(probs) - 1) > 1e-5:
            return f"probabilities {probs} are not two that sum to 1"
        return [float(p) for p in probs]
    except (ValueError, KeyError, TypeError) as e:
        return f"answer is not {{input_text, probabilities}} ({e}): {body[:200]!r}"


def stop_process(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


STARTED = []  # fresh-start processes still running, stopped on the way out


def first_answer(name, command, text, log_path, timeout=300):
    """Seconds from spawning COMMAND to its first 200 answer of POST /run_model, and the body."""
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in shlex.split(command)]
    payload = json.dumps({"text": text}).encode()
    with open(log_path, "w") as logf:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    STARTED.append(p)
    try:
        while True:
            if p.poll() is not None:
                with open(log_path, errors="replace") as f:
                    tail = "".join(f.readlines()[-10:])
                raise BenchError(f"{name} (fresh start) exited {p.returncode} before answering; {log_path}:\n{tail}")
            if time.perf_counter() - t0 > timeout:
                raise BenchError(f"{name} (fresh start) gave no 200 answer in {timeout} s; see {log_path}")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            try:
                conn.request("POST", "/run_model", body=payload, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                body = r.read()
                if r.status == 200:
                    return time.perf_counter() - t0, r.status, body
            except (ConnectionError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            time.sleep(0.005)
    finally:
        stop_process(p)
        STARTED.remove(p)


def quantile(values, q):
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fmt_ms(s):
    ms = s * 1000
    return f"{ms:.2f} ms" if ms < 100 else f"{ms:.1f} ms" if ms < 1000 else f"{s:.2f} s"


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def fmt_s(s):
    return f"{s:.2f} s"


def cpu_info():
    model = None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return model or platform.processor() or "unknown CPU", flags


def versions():
    import importlib.metadata as md

    def v(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "?"

    import torch

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = "?"
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "capability": capability,
        "transformers": v("transformers"),
        "tokenizers": v("tokenizers"),
        "flask": v("flask"),
        "gunicorn": v("gunicorn"),
        "python": platform.python_version(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="append", required=True, help="NAME=PORT:PID")
    ap.add_argument("--start", action="append", default=[], help="NAME=COMMAND with {port}")
    ap.add_argument("--model", required=True)
    ap.add_argument("--base", help="the server ratios are taken against (default: the last)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--lengths", default="16,64,128")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--raw")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()

    servers = parse_servers(args.server)
    names = [s["name"] for s in servers]
    starts = {}
    for s in args.start:
        name, command = s.split("=", 1)
        if name not in names:
            ap.error(f"--start {name}: no such --server")
        starts[name] = command
    base = args.base or names[-1]
    if base not in names:
        ap.error(f"--base {base}: no such --server")
    lengths = [int(n) for n in args.lengths.split(",")]
    if args.raw:
        os.makedirs(args.raw, exist_ok=True)

    texts, words = make_texts(args.model, lengths)
    payloads = {n: json.dumps({"text": t}).encode() for n, t in texts.items()}
    log(f"texts of {', '.join(map(str, lengths))} input_ids checked with the tokenizer")

    errors = []
    answers = {(s["name"], n): [] for s in servers for n in lengths}  # probabilities, in order
    latency = {(s["name"], n, r): [] for s in servers for n in lengths for r in range(1, args.rounds + 1)}
    ttfa = {name: [] for name in starts}
    raw = open(f"{args.raw}/requests.csv", "w") if args.raw else None
    if raw:
        raw.write("phase,round,server,tokens,i,ms,reused_connection,p0,p1\n")

    def note_answer(server, n, status, body, where):
        got = answer_problem(status, body, texts[n])
        if isinstance(got, str):
            raise BenchError(f"{server} {n} tokens {where}: {got}")
        answers[(server, n)].append(got)
        return got

    load = loadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    clients = {s["name"]: Client(s["port"]) for s in servers}
    for s in servers:
        s["procs"] = descendants(s["pid"])

    for n in lengths:
        for s in servers:
            c = clients[s["name"]]
            for i in range(args.warmup):
                t, status, body = c.run_model(payloads[n])
                p = note_answer(s["name"], n, status, body, f"warm-up {i + 1}")
                if raw:
                    raw.write(f"warmup,0,{s['name']},{n},{i},{t * 1000:.3f},,{p[0]!r},{p[1]!r}\n")
        log(f"warm-up {n} tokens: {args.warmup} requests each")

    for r in range(1, args.rounds + 1):
        for s in servers:
            if s["name"] not in starts:
                continue
            logp = f"{args.raw}/fresh-r{r}-{s['name']}.log" if args.raw else os.devnull
            t, status, body = first_answer(s["name"], starts[s["name"]], texts[lengths[0]], logp)
            note_answer(s["name"], lengths[0], status, body, f"round {r} fresh start")
            ttfa[s["name"]].append(t)
            log(f"round {r}/{args.rounds} {s['name']}: first answer {fmt_s(t)} after a fresh start")
        for n in lengths:
            for s in servers:
                c = clients[s["name"]]
                for i in range(args.requests):
                    reused = c.conn.sock is not None
                    t, status, body = c.run_model(payloads[n])
                    p = note_answer(s["name"], n, status, body, f"round {r} request {i + 1}")
                    latency[(s["name"], n, r)].append(t)
                    if raw:
                        raw.write(f"run,{r},{s['name']},{n},{i},{t * 1000:.3f},{int(reused)},{p[0]!r},{p[1]!r}\n")
                ts = latency[(s["name"], n, r)]
                log(f"round {r}/{args.rounds} {n} tokens {s['name']}: median {fmt_ms(statistics.median(ts))}, "
                    f"p90 {fmt_ms(quantile(ts, 0.9))}")
    if raw:
        raw.close()

    # Answers: every one within the tolerance of the base server's first, per text.
    worst = {}
    for n in lengths:
        ref = answers[(base, n)][0]
        worst[n] = 0.0
        for s in servers:
            bad = 0
            for p in answers[(s["name"], n)]:
                d = max(abs(a - b) for a, b in zip(p, ref))
                worst[n] = max(worst[n], d)
                if d > args.tolerance:
                    bad += 1
            if bad:
                errors.append(f"{s['name']} {n} tokens: {bad} answers differ from {base}'s {ref} by more than "
                              f"{args.tolerance:g}")

    load_after = loadavg()
    for s in servers:
        s["threads"] = sum(proc_field(p, "Threads") for p in tree_memory(s, errors))
        c = clients[s["name"]]
        s["keepalive"] = c.opened <= 1
        s["conn_note"] = (f"one persistent connection ({c.reused + c.opened} requests)" if c.opened <= 1
                          else f"new connection per request ({c.opened} opened for {c.reused + c.opened})")
        c.close()

    # ---- report
    total = {(s["name"], n): [t for r in range(1, args.rounds + 1) for t in latency[(s["name"], n, r)]]
             for s in servers for n in lengths}
    med = {k: statistics.median(v) for k, v in total.items()}
    p90 = {k: quantile(v, 0.9) for k, v in total.items()}
    by_name = {s["name"]: s for s in servers}
    model_name, flags = cpu_info()
    v = versions()
    others = [x for x in names if x != base]
    out = []
    out.append(f"### {' vs '.join(names)}: DistilBERT (distilbert-base-uncased shape) POST /run_model, "
               f"one request at a time, {args.threads} thread{'s' if args.threads != 1 else ''}, "
               f"{plural(args.rounds, 'round')} × {plural(args.requests, 'request')} interleaved")
    out.append("")
    out.append(f"{started:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores (nproc), {model_name} "
               f"(avx512f {'present' if 'avx512f' in flags else 'absent'}); Linux {platform.release()}; "
               f"load average {load} before, {load_after} after (1 min)")
    out.append("")
    out.append(f"| server | tokens | median | p90 | round medians | median × {base} | p90 × {base} |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in lengths:
        for name in names:
            rm = [statistics.median(latency[(name, n, r)]) for r in range(1, args.rounds + 1)]
            spread = fmt_ms(rm[0]) if len(rm) == 1 else f"{min(rm) * 1000:.2f}–{max(rm) * 1000:.2f} ms"
            out.append(f"| {name} | {n} | {fmt_ms(med[(name, n)])} | {fmt_ms(p90[(name, n)])} | {spread} | "
                       f"{med[(name, n)] / med[(base, n)]:.2f}× | {p90[(name, n)] / p90[(base, n)]:.2f}× |")
    out.append("")
    ttfa_head = f"time to first answer (median of {plural(args.rounds, 'fresh start')})" if starts else "time to first answer"
    out.append(f"| server | processes | threads | peak RSS (MB, sum of VmHWM) | × {base} | PSS at end (MB) | "
               f"{ttfa_head} | min–max | × {base} |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        s = by_name[name]
        hwm_ratio = s["hwm"] / by_name[base]["hwm"] if by_name[base]["hwm"] else float("nan")
        if ttfa.get(name) and ttfa.get(base):
            t = statistics.median(ttfa[name])
            cells = (f"{fmt_s(t)} | {min(ttfa[name]):.2f}–{max(ttfa[name]):.2f} s | "
                     f"{t / statistics.median(ttfa[base]):.2f}×")
        else:
            cells = "– | – | –"
        out.append(f"| {name} | {s['nprocs']} | {s['threads']} | {s['hwm'] / 1024:.1f} | {hwm_ratio:.2f}× | "
                   f"{s['pss'] / 1024:.1f} | {cells} |")
    out.append("")
    out.append("| target (the issue's) | measured | met |")
    out.append("| --- | ---: | :---: |")
    for name in others:
        for n in lengths:
            x = med[(name, n)] / med[(base, n)]
            out.append(f"| {name} latency at {n} tokens ≤ ½ × {base}'s (median) | {x:.2f}× | "
                       f"{'yes' if x <= 0.5 else 'no'} |")
        x = by_name[name]["hwm"] / by_name[base]["hwm"]
        out.append(f"| {name} peak memory ≤ ⅓ × {base}'s | {x:.2f}× | {'yes' if x <= 1 / 3 else 'no'} |")
    out.append("")
    cuda = (f"the CUDA {v['cuda']} build from PyPI, run on the CPU (no GPU here)" if v["cuda"]
            else "a CPU-only build")
    out.append(f"- Versions: torch {v['torch']} ({cuda}; its CPU kernels: {v['capability']}), "
               f"transformers {v['transformers']}, tokenizers {v['tokenizers']}, Flask {v['flask']}, "
               f"gunicorn {v['gunicorn']}, Python {v['python']}.")
    out.append(f"- Threads: {args.threads} for the model on both sides; the threads column counts every "
               f"thread of the process tree at the end (runtimes' and libraries' own included).")
    out.append(f"- Texts: '{words[0]} {words[1]} …' repeated, one token per word, exactly "
               f"{', '.join(map(str, lengths))} input_ids with [CLS] and [SEP] (checked with tokenizer.json "
               f"through transformers' PreTrainedTokenizerFast). Every answer checked: 200, input_text "
               f"echoed, probabilities within {args.tolerance:g} of {base}'s first; largest difference seen: "
               + ", ".join(f"{worst[n]:.1e} at {n}" for n in lengths) + ".")
    out.append("- Latency is the client's (Python http.client on the same cores), one request at a time, "
               f"after {args.warmup} warm-up requests per server and length; "
               + "; ".join(f"{name}: {by_name[name]['conn_note']}" for name in names) + ".")
    if starts:
        out.append("- Time to first answer: from spawning the process to the first 200 answer of POST "
                   f"/run_model ({lengths[0]} tokens, sent every 5 ms), once per round, each a fresh start "
                   "(model file already in the page cache). Peak RSS is the long-running servers', "
                   "after all the timed requests.")
    return finish(out, args.note, errors)


def on_term(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"ERROR {e}")
        sys.exit(1)
    finally:
        for p in list(STARTED):
            stop_process(p)
