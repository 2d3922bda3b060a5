#!/usr/bin/env python3
"""Measures `agent exec -- uname -a` against the fastest tools users have, on one fleet.

Called by benches/exec (which installs the tools, builds agent and brings the fleet up):

    exec_bench.py --fleet-dir DIR --agent PATH --venv DIR [--rounds R] [--rtt 40ms]

Tools run interleaved (round-robin, the starting tool rotating each round) after one
untimed warm-up run each. For every run: wall time, client CPU (user+sys of the tool and
every process it started, ControlPersist masters included: this process is a child
subreaper, so orphans are reparented to it, killed after the run and reaped, and
RUSAGE_CHILDREN deltas then count them), peak RSS (largest single process of the tree, from
wait4 maxrss) and the tree's summed RSS (sampled every 100 ms). A run whose exit status is
not 0 or where not every host answered is not a valid sample: it is reported as an error.
"""

import argparse
import ctypes
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

PR_SET_CHILD_SUBREAPER = 36
PAGE = os.sysconf("SC_PAGE_SIZE")
HERE = os.path.dirname(os.path.abspath(__file__))

PSSH_LIB_SCRIPT = r"""
import json, sys
from pssh.clients import ParallelSSHClient
from pssh.config import HostConfig
cfg = json.load(open(sys.argv[1]))
hosts = [h for h, _ in cfg["hosts"]]
client = ParallelSSHClient(
    hosts, user=cfg["user"], pkey=cfg["key"], pool_size=len(hosts),
    host_config=[HostConfig(port=p) for _, p in cfg["hosts"]],
)
output = client.run_command("uname -a", stop_on_errors=False)
client.join(output)
bad = 0
for h in output:
    lines = list(h.stdout or [])
    for line in lines:
        print(h.host, line)
    if h.exception is not None or h.exit_code != 0 or not lines:
        bad += 1
        print("FAILED", h.host, h.exit_code, repr(h.exception), file=sys.stderr)
sys.exit(1 if bad else 0)
"""


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


def publish(text, report, work=None):
    """Prints the report, appends it to `report` if given, removes the work folder if given."""
    print(text, flush=True)
    if report:
        with open(report, "a") as f:
            f.write(text + "\n")
    if work:
        shutil.rmtree(work, ignore_errors=True)


def parse_duration(s: str) -> float:
    s = s.strip()
    for suf, mul in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if s.endswith(suf):
            return float(s[: -len(suf)]) * mul
    return float(s)


# ------------------------------------------------------------------ process accounting


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
        me = os.getpid()
        kids = {}
        for pid, (ppid, _) in t.items():
            kids.setdefault(ppid, []).append(pid)
        todo = [self.root] + [p for p in kids.get(me, []) if p != self.root and p not in self.exclude]
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


# ------------------------------------------------------------------ tools


def count_linux_lines(n, what, stream="stdout"):
    def check(stdout, stderr):
        text = stderr if stream == "stderr" else stdout
        got = sum(1 for line in text.splitlines() if "Linux " in line)
        if got != n:
            return f"{what}: {got} of {n} hosts printed uname output"
        return None

    return check


class Bench:
    def __init__(self, a):
        self.a = a
        self.work = tempfile.mkdtemp(prefix="run-", dir=a.work_root)
        inv = tomllib.load(open(os.path.join(a.fleet_dir, "inventory.toml"), "rb"))
        self.key = os.path.join(a.fleet_dir, "labsuser.pem")
        self.user = inv.get("defaults", {}).get("user", "ubuntu")
        self.hosts = [(h["name"], h["address"], h.get("port", 22)) for h in inv["hosts"]]
        self.n = len(self.hosts)
        self.keep = set()
        self.proxy = None
        self.targets = [(name, addr, port) for name, addr, port in self.hosts]
        self.env = dict(os.environ)
        self.env.pop("SSH_AUTH_SOCK", None)
        self.env["HOME"] = os.path.join(self.work, "home")  # no user ssh/ansible config leaks in
        os.makedirs(self.env["HOME"])
        self.env["PATH"] = os.path.join(a.venv, "bin") + ":" + self.env.get("PATH", "")

    # -------------------------------------------------------------- latency proxy
    def start_proxy(self):
        p = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "rtt_proxy.py"), "--rtt", str(self.a.rtt)]
            + [addr for _, addr, _ in self.hosts],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        line = p.stdout.readline()
        ports = json.loads(line)["ports"]
        self.proxy = p
        self.keep.add(p.pid)
        self.targets = [(name, "127.0.0.1", port) for (name, _, _), port in zip(self.hosts, ports)]

    def stop_proxy(self):
        if self.proxy:
            self.proxy.terminate()
            try:
                self.proxy.wait(5)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()
            self.proxy = None

    def banner_time(self, addr, port):
        t0 = time.perf_counter()
        with socket.create_connection((addr, port), timeout=10) as s:
            s.recv(256)
        return time.perf_counter() - t0

    def ssh_true_time(self, addr, port):
        t0 = time.perf_counter()
        subprocess.run(
            ["ssh", "-i", self.key, "-p", str(port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{self.user}@{addr}", "true"],
            check=True, stdin=subprocess.DEVNULL, env=self.env,
        )
        return time.perf_counter() - t0

    def verify_latency(self):
        _, addr, _ = self.hosts[0]
        _, paddr, pport = self.targets[0]
        direct = statistics.median(self.banner_time(addr, 22) for _ in range(5))
        proxied = statistics.median(self.banner_time(paddr, pport) for _ in range(5))
        sdirect = statistics.median(self.ssh_true_time(addr, 22) for _ in range(3))
        sproxied = statistics.median(self.ssh_true_time(paddr, pport) for _ in range(3))
        lines = [
            f"- latency check (host 0): TCP connect + SSH banner {direct * 1e3:.1f} ms direct, "
            f"{proxied * 1e3:.1f} ms through the proxy (rtt {self.a.rtt * 1e3:.0f} ms); "
            f"`ssh host true` {sdirect * 1e3:.0f} ms direct, {sproxied * 1e3:.0f} ms proxied "
            f"(+{(sproxied - sdirect) / self.a.rtt:.1f} rtt)"
        ]
        if proxied - direct < 0.8 * self.a.rtt:
            raise SystemExit(f"latency proxy does not add the rtt: banner {proxied * 1e3:.1f} ms")
        return lines

    # -------------------------------------------------------------- per-tool setup
    def setup(self):
        w, n, t = self.work, self.n, self.targets
        # agent: its own inventory (and so its own known_hosts beside it)
        self.agent_inv = os.path.join(w, "agent-inventory.toml")
        with open(self.agent_inv, "w") as f:
            f.write(f'[defaults]\nuser = "{self.user}"\nkey = "{self.key}"\n')
            for name, addr, port in t:
                f.write(f'\n[[hosts]]\nname = "{name}"\naddress = "{addr}"\nport = {port}\n')
        # parallel-ssh library
        self.pssh_lib_cfg = os.path.join(w, "pssh-lib.json")
        json.dump({"hosts": [[addr, port] for _, addr, port in t], "user": self.user, "key": self.key},
                  open(self.pssh_lib_cfg, "w"))
        self.pssh_lib_script = os.path.join(w, "pssh_lib_exec.py")
        open(self.pssh_lib_script, "w").write(PSSH_LIB_SCRIPT)
        # pssh CLI
        self.pssh_hosts = os.path.join(w, "pssh-hosts")
        with open(self.pssh_hosts, "w") as f:
            for _, addr, port in t:
                f.write(f"{self.user}@{addr}:{port}\n")
        # pyinfra
        self.pyinfra_inv = os.path.join(w, "pyinfra_inventory.py")
        with open(self.pyinfra_inv, "w") as f:
            f.write("hosts = [\n")
            for name, addr, port in t:
                f.write(f"    ({name!r}, {{'ssh_hostname': {addr!r}, 'ssh_port': {port}}}),\n")
            f.write("]\n")
        # ansible
        self.ansible_inv = os.path.join(w, "ansible-inventory.ini")
        with open(self.ansible_inv, "w") as f:
            f.write("[fleet]\n")
            for name, addr, port in t:
                f.write(f"{name} ansible_host={addr} ansible_port={port}\n")
            f.write(f"\n[fleet:vars]\nansible_user={self.user}\nansible_ssh_private_key_file={self.key}\n")
        self.ansible_cfg = os.path.join(w, "ansible.cfg")
        with open(self.ansible_cfg, "w") as f:
            f.write(
                "[defaults]\nhost_key_checking = False\ninterpreter_python = /usr/bin/python3\n"
                f"forks = {n}\nlocal_tmp = {w}/ansible-tmp\n"
                "[ssh_connection]\npipelining = True\n"
                "ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null\n"
            )
        self.round_no = 0

        V = lambda x: os.path.join(self.a.venv, "bin", x)  # noqa: E731
        self.tools = {
            "agent": dict(
                argv=[self.a.agent, "exec", "-i", self.agent_inv, "--no-logs", "--parallel", str(n), "--", "uname", "-a"],
                stdout=False, check=lambda o, e: None,  # exit status 0 = every host ran it and exited 0
            ),
            "parallel-ssh (lib)": dict(
                argv=[V("python"), self.pssh_lib_script, self.pssh_lib_cfg],
                stdout=True, check=count_linux_lines(n, "parallel-ssh"),
            ),
            "pssh CLI": dict(
                argv=["parallel-ssh", "-h", self.pssh_hosts, "-p", str(n), "-i", "-t", "60",
                      "-O", "StrictHostKeyChecking=no", "-O", "UserKnownHostsFile=/dev/null",
                      "-O", f"IdentityFile={self.key}", "-O", "BatchMode=yes", "-O", "LogLevel=ERROR",
                      "uname -a"],
                stdout=True, check=self.check_pssh_cli,
            ),
            "pyinfra": dict(
                argv=[V("pyinfra"), self.pyinfra_inv, "exec", "-y", "--parallel", str(n),
                      "--ssh-user", self.user, "--ssh-key", self.key,
                      "--data", "ssh_strict_host_key_checking=no", "--data", "ssh_known_hosts_file=/dev/null",
                      "--", "uname", "-a"],
                stdout=False, check=self.check_pyinfra,
            ),
            "ansible": dict(
                argv=[V("ansible"), "all", "-i", self.ansible_inv, "-m", "command", "-a", "uname -a", "-f", str(n)],
                stdout=True, check=self.check_ansible, env=self.ansible_env,
            ),
        }
        if self.a.tools:
            want = [x.strip() for x in self.a.tools.split(",")]
            self.tools = {k: v for k, v in self.tools.items() if k == "agent" or any(k.startswith(x) for x in want)}

    def check_pssh_cli(self, stdout, _stderr):
        ok = stdout.count("[SUCCESS]")
        if ok != self.n:
            return f"pssh: {ok} of {self.n} hosts SUCCESS"
        return count_linux_lines(self.n, "pssh")(stdout, _stderr)

    def check_pyinfra(self, stdout, stderr):
        # pyinfra prints everything, command output included, on stderr
        ok = sum(1 for line in stderr.splitlines() if re.fullmatch(r"\s*\[[^\]]+\]\s+Success\s*", line))
        if ok != self.n:
            return f"pyinfra: {ok} of {self.n} hosts Success"
        return count_linux_lines(self.n, "pyinfra", "stderr")(stdout, stderr)

    def check_ansible(self, stdout, _stderr):
        ok = stdout.count("| CHANGED | rc=0")
        if ok != self.n:
            return f"ansible: {ok} of {self.n} hosts CHANGED rc=0"
        return count_linux_lines(self.n, "ansible")(stdout, _stderr)

    def ansible_env(self, env):
        # A fresh ControlPath dir per run: no master from an earlier run can be reused
        # (and measure() kills the masters this run left, once it exits).
        self.round_no += 1
        cp = os.path.join(self.work, f"ansible-cp-{self.round_no}")
        os.makedirs(cp)
        env = dict(env)
        env["ANSIBLE_CONFIG"] = self.ansible_cfg
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = cp
        env["ANSIBLE_HOME"] = os.path.join(self.work, "ansible-home")
        env["ANSIBLE_NOCOLOR"] = "1"
        return env

    def run_tool(self, name):
        t = self.tools[name]
        env = t["env"](self.env) if "env" in t else self.env
        out = os.path.join(self.work, "stdout.txt") if t["stdout"] else None
        return measure(t["argv"], env, out, self.keep, t["check"])

    # -------------------------------------------------------------- main
    def run(self):
        a = self.a
        notes = []
        self.busy0 = machine_busy()
        if a.rtt > 0:
            self.start_proxy()
            notes += self.verify_latency()
        try:
            self.setup()
            # agent pins host keys on first contact: one warm-up run per fleet (and per proxy
            # ports), so timed runs check pinned keys. Every other tool gets one untimed run too.
            for name in self.tools:
                r = self.run_tool(name)
                status = "ok" if r.ok else "FAILED: " + r.err
                print(f"warm-up {name}: {r.wall:.2f}s {status}", file=sys.stderr, flush=True)
            if not os.path.exists(os.path.splitext(self.agent_inv)[0] + ".known_hosts"):
                raise SystemExit("agent warm-up did not write its known_hosts beside the inventory")
            names = list(self.tools)
            samples = {k: [] for k in names}
            errors = {k: [] for k in names}
            for rnd, name in interleaved(names, a.rounds):
                r = self.run_tool(name)
                (samples if r.ok else errors)[name].append(r)
                log_run(f"round {rnd + 1}/{a.rounds} {name:20s}", r)
        finally:
            self.stop_proxy()
        self.report(samples, errors, notes)

    def report(self, samples, errors, notes):
        a, n = self.a, self.n
        med = {}
        for k, rs in samples.items():
            if rs:
                med[k] = dict(
                    wall=statistics.median(r.wall for r in rs),
                    cpu=statistics.median(r.cpu for r in rs),
                    rss=max(r.maxrss for r in rs) / 2**20,
                    tree=max(r.tree_rss for r in rs) / 2**20,
                )
        anchors = [k for k in med if k != "agent"]
        fastest = min(anchors, key=lambda k: med[k]["wall"]) if anchors else None
        model = "?"
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        rtt = f"{a.rtt * 1e3:.0f} ms added RTT (user-space proxy)" if a.rtt else "no added latency"
        out = []
        out.append(f"### agent exec -- uname -a: {n} hosts, {rtt}, {a.rounds} rounds")
        out.append("")
        out.append(f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {os.cpu_count()} cores, {model}; "
                   f"{platform.system()} {platform.release()}; CPU busy in the second before start {self.busy0:.0%}")
        out.append("")
        out.append("| tool | wall median (s) | vs fastest anchor | client CPU (s) | peak RSS (MB) | tree RSS (MB) |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for k in self.tools:
            if k not in med:
                out.append(f"| {k} | ERROR | | | | |")
                continue
            m = med[k]
            ratio = f"{m['wall'] / med[fastest]['wall']:.2f}×" if fastest else "-"
            bad = f" ({len(errors[k])} failed runs)" if errors[k] else ""
            out.append(f"| {k}{' (fastest anchor)' if k == fastest else ''}{bad} | {m['wall']:.3f} | {ratio} | "
                       f"{m['cpu']:.2f} | {m['rss']:.0f} | {m['tree']:.0f} |")
        out.append("")
        for k, es in errors.items():
            for e in es:
                out.append(f"- ERROR {k}: {e.err} (run not counted)")
        out += notes
        out.append("- anchors ran without host key checking (StrictHostKeyChecking=no, UserKnownHostsFile=/dev/null; "
                   "ansible host_key_checking=False; pyinfra ssh_strict_host_key_checking=no; parallel-ssh lib "
                   "does not check); agent checked keys pinned by a warm-up run.")
        out.append("- ansible: pipelining on, ControlMaster=auto ControlPersist=60s, interpreter_python=/usr/bin/python3; "
                   "a fresh ControlPath dir per run and its masters killed (their CPU counted) after each run.")
        out.append("- client CPU = user+sys of the tool and all its descendants (median); peak RSS = largest single "
                   "process (max over runs); tree RSS = summed RSS of the process tree, sampled every 100 ms (max).")
        if "agent" in med and fastest:
            ag, fa = med["agent"], med[fastest]
            wr, cr = ag["wall"] / fa["wall"], ag["cpu"] / fa["cpu"]
            lowest = min(anchors, key=lambda k: med[k]["cpu"])
            head = "Targets" if n >= 50 else "Targets (defined at 50 hosts; shown for reference)"
            out.append("")
            out.append(f"{head}, fastest anchor = {fastest}:")
            out.append(f"- wall ≤ 0.75× fastest anchor: {ag['wall']:.3f}s / {fa['wall']:.3f}s = {wr:.2f}× → "
                       f"{'MET' if wr <= 0.75 else 'MISSED'}")
            out.append(f"- client CPU ≤ 0.5× fastest anchor's: {ag['cpu']:.2f}s / {fa['cpu']:.2f}s = {cr:.2f}× → "
                       f"{'MET' if cr <= 0.5 else 'MISSED'}"
                       f" (lowest-CPU anchor {lowest}: {med[lowest]['cpu']:.2f}s, {ag['cpu'] / med[lowest]['cpu']:.2f}×)")
        publish("\n".join(out) + "\n", a.report, None if a.keep_work else self.work)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fleet-dir", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rtt", type=parse_duration, default=0.0, help="added round-trip time, e.g. 40ms")
    ap.add_argument("--work-root", default="/var/tmp/agent-bench")
    ap.add_argument("--tools", default="", help="comma-separated prefixes of anchors to run (agent always runs)")
    ap.add_argument("--report", help="append the Markdown report to this file too")
    ap.add_argument("--keep-work", action="store_true")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    Bench(a).run()


if __name__ == "__main__":
    main()
