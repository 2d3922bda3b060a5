"""What the bench scripts share: progress lines, HTTP, /proc readers and wrk runs for the
server benches (web, worker, orchestrator); process accounting, the run loop and the report
pieces for the fleet benches (exec, deploy, upload).

Each *_bench.py sets sys.dont_write_bytecode before importing this: no __pycache__ in benches/.
"""

import argparse
import ctypes
import datetime
import hashlib
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

PR_SET_CHILD_SUBREAPER = 36
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ both kinds


def cpu_model():
    """/proc/cpuinfo's model name, None where it has none."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def proc_table():
    """{pid: (ppid, rss_bytes)} for every process."""
    out = {}
    for e in os.scandir("/proc"):
        if not e.name.isdigit():
            continue
        try:
            with open(f"/proc/{e.name}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(b")") + 2 :].split()
        # fields after comm: state ppid ... rss is field 24 (index 21 here)
        out[int(e.name)] = (int(rest[1]), int(rest[21]) * PAGE)
    return out


def children(table):
    """{ppid: [pid, ...]} of a proc_table()."""
    kids = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    return kids


# ------------------------------------------------------------------ server benches


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def log_errors(problems):
    """Logs every problem as an ERROR; whether there was one."""
    for p in problems:
        log("ERROR " + p)
    return bool(problems)


def parse_servers(specs):
    """--server NAME=PORT:PID values as {"name", "port", "pid"} dicts."""
    servers = []
    for s in specs:
        name, rest = s.rsplit("=", 1)
        port, pid = rest.split(":")
        servers.append({"name": name, "port": int(port), "pid": int(pid)})
    return servers


def http(method, url, body=None, timeout=10):
    """(status, text) of one request; a body is sent as JSON."""
    # Imported here: exec_bench's tools start with its peak RSS (measure()), so it loads no HTTP client.
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def descendants(pid):
    """pid and every process below it (gunicorn: the master and its workers)."""
    kids = children(proc_table())
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_field(pid, field, name="status"):
    """A number (kB, or a count) of /proc/PID/NAME, 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(s, errors):
    """Sets server s's "hwm" (VmHWM) and "pss" in kB, summed over its process tree, and
    "nprocs"; returns the tree, noting an error if it is not s["procs"] any more."""
    now = descendants(s["pid"])
    if sorted(now) != sorted(s["procs"]):
        errors.append(f"{s['name']}: processes changed during the run ({s['procs']} -> {now}); RSS is partial")
    s["hwm"] = sum(proc_field(p, "VmHWM") for p in now)
    s["pss"] = sum(proc_field(p, "Pss", "smaps_rollup") for p in now)
    s["nprocs"] = len(now)
    return now


def loadavg():
    """The 1-minute load average, as /proc/loadavg writes it."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def machine_line(started, load):
    return (f"{started:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores (nproc), "
            f"{cpu_model() or platform.processor() or 'unknown CPU'}; "
            f"Linux {platform.release()}; load average before start {load}")


def run_wrk(url, threads, conns, duration, opts, raw=None, during=None):
    """Runs `wrk -tT -cC -dD OPTS URL`, calling during() while it runs; (wrk's stdout, what
    during() returned). The command and wrk's output go to the file raw if given; an exit
    status other than 0 raises."""
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}", *opts, url]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            got = during() if during else None
            stdout, stderr = p.communicate()
        except BaseException:
            p.kill()
            raise
    if raw:
        with open(raw, "w") as f:
            f.write(" ".join(cmd) + "\n" + stdout + stderr)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {stderr.strip()}")
    return stdout, got


def fmt_ms(ms):
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    return f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def sock_text(sock):
    """wrk's socket errors (connect, read, write, timeout) as words."""
    if not any(sock):
        return "none"
    return ", ".join(f"{k} {v}" for k, v in zip(("connect", "read", "write", "timeout"), sock) if v)


def finish(out, notes, errors):
    """Prints the report: its lines, the --note lines, then the errors; returns the exit status."""
    out += [f"- {n}" for n in notes]
    if errors:
        out.append("")
        out += [f"- ERROR: {e}" for e in errors]
    print("\n".join(out))
    return 1 if errors else 0


# ------------------------------------------------------------------ fleet benches


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def interleaved(names, rounds):
    """(round, tool) pairs, the starting tool rotating each round, so the machine's noise
    falls on every tool alike."""
    for rnd in range(rounds):
        for name in names[rnd % len(names):] + names[: rnd % len(names)]:
            yield rnd, name


def log_run(label, r, extra=""):
    """One progress line on stderr for a measured run."""
    tag = "" if r.ok else "  ERROR " + r.err
    print(f"{label} wall {r.wall:6.2f}s{extra} cpu {r.cpu:6.2f}s rss {r.maxrss / 2**20:6.1f}MB "
          f"tree {r.tree_rss / 2**20:6.1f}MB{tag}", file=sys.stderr, flush=True)


class TreeSampler(threading.Thread):
    """Peak of the summed RSS of `root` and its descendants (and of orphans adopted by us,
    except `exclude`), sampled every `interval` seconds."""

    def __init__(self, root, exclude, interval=0.1):
        super().__init__(daemon=True)
        self.root, self.exclude, self.interval = root, set(exclude), interval
        self.peak = 0
        self.stop_ev = threading.Event()

    def sample(self):
        t = proc_table()
        kids = children(t)
        todo = [self.root] + [p for p in kids.get(os.getpid(), []) if p != self.root and p not in self.exclude]
        seen, total = set(), 0
        while todo:
            p = todo.pop()
            if p in seen or p not in t:
                continue
            seen.add(p)
            total += t[p][1]
            todo.extend(kids.get(p, []))
        self.peak = max(self.peak, total)

    def run(self):
        while not self.stop_ev.wait(self.interval):
            try:
                self.sample()
            except Exception:
                pass


def machine_busy(seconds=1.0):
    """Fraction of all cores busy over `seconds` (a check that the machine is quiet)."""

    def snap():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Result:
    def __init__(self, ok, wall, cpu, maxrss, tree_rss, err=""):
        self.ok, self.wall, self.cpu, self.maxrss, self.tree_rss, self.err = ok, wall, cpu, maxrss, tree_rss, err


def spawn_clean(argv, env, out, errf):
    """Starts argv as a grandchild, through sh, which exits at once; returns its pid. The tool
    is reparented to this process (a child subreaper), so wait4 reaps it, and its maxrss is
    its own: a child forked from this Python process keeps Python's peak RSS as its maxrss
    across exec (the kernel carries the old mm's high-water mark over), which would put a
    floor of this harness's RSS under every tool's figure. sh's own peak is ~1 MB. As any
    background job of a non-interactive sh, the tool starts with SIGINT and SIGQUIT ignored
    (measure() kills it if the harness is interrupted)."""
    # sh: stdin = the tool's stdout file, stdout = a pipe for the pid (dash has no fd > 9)
    sh = subprocess.Popen(["sh", "-c", 'exec 3>&0 0</dev/null; "$@" >&3 3>&- & echo $!', "sh", *argv], env=env,
                          stdin=out, stdout=subprocess.PIPE, stderr=errf)
    text = sh.stdout.read()
    sh.stdout.close()
    if sh.wait() != 0 or not text.strip().isdigit():
        raise RuntimeError(f"could not start {argv[0]} through sh (exit {sh.returncode})")
    return int(text)


def measure(argv, env, stdout_path, keep_pids, check, clean_rss=False):
    """Runs argv, returns a Result. stdout goes to stdout_path (or /dev/null if None).
    clean_rss: start it through spawn_clean(), so its peak RSS is its own (without it, the
    figure is at least this harness's RSS, ~20-25 MB)."""
    cpu0 = children_cpu()
    errf = tempfile.TemporaryFile()
    out = open(stdout_path, "wb") if stdout_path else open(os.devnull, "wb")
    t0 = time.perf_counter()
    p = None
    if clean_rss:
        pid = spawn_clean(argv, env, out, errf)
    else:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=errf)
        pid = p.pid
    sampler = TreeSampler(pid, keep_pids)
    sampler.start()
    try:
        _, status, ru = os.wait4(pid, 0)
    except BaseException:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        raise
    wall = time.perf_counter() - t0
    returncode = os.waitstatus_to_exitcode(status)
    if p is not None:
        p.returncode = returncode  # reaped here: Popen must not wait for it again
    sampler.stop_ev.set()
    sampler.join()
    out.close()
    maxrss = ru.ru_maxrss * 1024
    # Orphans the tool left behind (ssh ControlPersist masters): kill, reap, count.
    orphans = [pid for pid, (ppid, _) in proc_table().items() if ppid == os.getpid() and pid not in keep_pids]
    for pid in orphans:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in orphans:
        try:
            _, _, oru = os.wait4(pid, 0)
            maxrss = max(maxrss, oru.ru_maxrss * 1024)
        except ChildProcessError:
            pass
    cpu = children_cpu() - cpu0
    errf.seek(0)
    stderr = errf.read().decode(errors="replace")
    errf.close()
    stdout = ""
    if stdout_path:
        with open(stdout_path, errors="replace") as f:
            stdout = f.read()
    err = ""
    if returncode != 0:
        err = f"exit status {returncode}"
    else:
        err = check(stdout, stderr) or ""
    if err:
        tail = (stderr.strip().splitlines() or [""])[-3:]
        err += " | stderr: " + " / ".join(tail)[:300]
    # a run shorter than one sampling interval: the tree is at least its largest process
    return Result(not err, wall, cpu, maxrss, max(sampler.peak, maxrss), err)


class FleetBench:
    """A fleet bench's start: a work folder, the fleet's inventory, and an environment where
    no user ssh or ansible config leaks in. Subclasses define tools, run_tool(name) and run()."""

    def __init__(self, a, prefix):
        self.a = a
        self.work = tempfile.mkdtemp(prefix=prefix, dir=a.work_root)
        self.inv_path = os.path.join(a.fleet_dir, "inventory.toml")
        inv = tomllib.load(open(self.inv_path, "rb"))
        self.key = os.path.join(a.fleet_dir, "labsuser.pem")
        self.user = inv.get("defaults", {}).get("user", "ubuntu")
        self.hosts = [(h["name"], h["address"], h.get("port", 22)) for h in inv["hosts"]]
        self.n = len(self.hosts)
        self.keep = set()
        self.env = dict(os.environ)
        self.env.pop("SSH_AUTH_SOCK", None)
        self.env["HOME"] = os.path.join(self.work, "home")
        os.makedirs(self.env["HOME"])
        self.ansible_runs = 0

    def write_ansible(self, hosts, host_key_checking, ssh_args):
        """Ansible's inventory of hosts [(name, address, port or None)] and its ansible.cfg:
        forks = hosts, pipelining, ControlMaster=auto ControlPersist=60s, then ssh_args."""
        w = self.work
        self.ansible_inv = os.path.join(w, "ansible-inventory.ini")
        with open(self.ansible_inv, "w") as f:
            f.write("[fleet]\n")
            for name, addr, port in hosts:
                f.write(f"{name} ansible_host={addr}" + (f" ansible_port={port}" if port else "") + "\n")
            f.write(f"\n[fleet:vars]\nansible_user={self.user}\nansible_ssh_private_key_file={self.key}\n")
        self.ansible_cfg = os.path.join(w, "ansible.cfg")
        with open(self.ansible_cfg, "w") as f:
            f.write(
                f"[defaults]\nhost_key_checking = {host_key_checking}\ninterpreter_python = /usr/bin/python3\n"
                f"forks = {len(hosts)}\nlocal_tmp = {w}/ansible-tmp\n"
                "[ssh_connection]\npipelining = True\n"
                f"ssh_args = -o ControlMaster=auto -o ControlPersist=60s {ssh_args}\n"
            )

    def ansible_env(self, env):
        # A fresh ControlPath dir per run: no master from an earlier run can be reused
        # (and measure() kills the masters this run left, once it exits).
        self.ansible_runs += 1
        cp = os.path.join(self.work, f"ansible-cp-{self.ansible_runs}")
        os.makedirs(cp)
        env = dict(env)
        env["ANSIBLE_CONFIG"] = self.ansible_cfg
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = cp
        env["ANSIBLE_HOME"] = os.path.join(self.work, "ansible-home")
        env["ANSIBLE_NOCOLOR"] = "1"
        return env

    def timed_runs(self, known_hosts, width, extra=lambda r: ""):
        """One untimed warm-up run per tool (agent pins host keys into known_hosts), then the
        rounds, interleaved: (samples, errors), each {tool: [Result, ...]}."""
        for name in self.tools:
            r = self.run_tool(name)
            print(f"warm-up {name}: {r.wall:.2f}s {'ok' if r.ok else 'FAILED: ' + r.err}", file=sys.stderr, flush=True)
        if not os.path.exists(known_hosts):
            raise SystemExit("agent warm-up did not write its known_hosts beside the inventory")
        names = list(self.tools)
        samples = {k: [] for k in names}
        errors = {k: [] for k in names}
        for rnd, name in interleaved(names, self.a.rounds):
            r = self.run_tool(name)
            (samples if r.ok else errors)[name].append(r)
            log_run(f"round {rnd + 1}/{self.a.rounds} {name:{width}s}", r, extra(r))
        return samples, errors

    def publish(self, out):
        """Prints the report's lines, appends them to --report's file, removes the work folder
        (unless --keep-work)."""
        text = "\n".join(out) + "\n"
        print(text, flush=True)
        if self.a.report:
            with open(self.a.report, "a") as f:
                f.write(text + "\n")
        if not self.a.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)


def medians(samples):
    """Per tool with valid runs: median wall and client CPU (s), largest peak and tree RSS (MB)."""
    return {k: dict(wall=statistics.median(r.wall for r in rs), cpu=statistics.median(r.cpu for r in rs),
                    rss=max(r.maxrss for r in rs) / 2**20, tree=max(r.tree_rss for r in rs) / 2**20)
            for k, rs in samples.items() if rs}


def anchor_table(tools, samples, errors):
    """The table of tools against the fastest anchor (every tool but agent): (rows, medians,
    the fastest anchor or None)."""
    med = medians(samples)
    anchors = [k for k in med if k != "agent"]
    fastest = min(anchors, key=lambda k: med[k]["wall"]) if anchors else None
    out = ["| tool | wall median (s) | vs fastest anchor | client CPU (s) | peak RSS (MB) | tree RSS (MB) |",
           "|---|---:|---:|---:|---:|---:|"]
    for k in tools:
        if k not in med:
            out.append(f"| {k} | ERROR | | | | |")
            continue
        m = med[k]
        ratio = f"{m['wall'] / med[fastest]['wall']:.2f}×" if fastest else "-"
        bad = f" ({len(errors[k])} failed runs)" if errors[k] else ""
        out.append(f"| {k}{' (fastest anchor)' if k == fastest else ''}{bad} | {m['wall']:.3f} | {ratio} | "
                   f"{m['cpu']:.2f} | {m['rss']:.0f} | {m['tree']:.0f} |")
    return out, med, fastest


def fleet_machine_line(busy0):
    return (f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {os.cpu_count()} cores, "
            f"{cpu_model() or '?'}; {platform.system()} {platform.release()}; "
            f"CPU busy in the second before start {busy0:.0%}")


def fleet_parser(doc):
    """The options every fleet bench starts with; its module docstring as the help."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fleet-dir", required=True)
    ap.add_argument("--agent", required=True)
    return ap


def run_fleet_bench(ap, bench, tools=True):
    """Adds the options every fleet bench ends with, parses them and runs bench(args).run() as
    a child subreaper (measure() reaps what the tools leave behind)."""
    ap.add_argument("--work-root", default="/var/tmp/agent-bench")
    if tools:
        ap.add_argument("--tools", default="", help="comma-separated prefixes of anchors to run (agent always runs)")
    ap.add_argument("--report", help="append the Markdown report to this file too")
    ap.add_argument("--keep-work", action="store_true")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    bench(a).run()
