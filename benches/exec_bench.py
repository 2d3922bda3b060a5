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

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in benches/
from bench_common import (  # noqa: E402
    FleetBench, anchor_table, fleet_machine_line, fleet_parser, machine_busy, measure, run_fleet_bench,
)

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


def parse_duration(s: str) -> float:
    s = s.strip()
    for suf, mul in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if s.endswith(suf):
            return float(s[: -len(suf)]) * mul
    return float(s)


# ------------------------------------------------------------------ tools


def count_linux_lines(n, what, stream="stdout"):
    def check(stdout, stderr):
        text = stderr if stream == "stderr" else stdout
        got = sum(1 for line in text.splitlines() if "Linux " in line)
        if got != n:
            return f"{what}: {got} of {n} hosts printed uname output"
        return None

    return check


class Bench(FleetBench):
    def __init__(self, a):
        super().__init__(a, "run-")
        self.proxy = None
        self.targets = [(name, addr, port) for name, addr, port in self.hosts]
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
        self.write_ansible(t, False, "-o UserKnownHostsFile=/dev/null")

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
            samples, errors = self.timed_runs(os.path.splitext(self.agent_inv)[0] + ".known_hosts", 20)
        finally:
            self.stop_proxy()
        self.report(samples, errors, notes)

    def report(self, samples, errors, notes):
        a, n = self.a, self.n
        rows, med, fastest = anchor_table(self.tools, samples, errors)
        rtt = f"{a.rtt * 1e3:.0f} ms added RTT (user-space proxy)" if a.rtt else "no added latency"
        out = [f"### agent exec -- uname -a: {n} hosts, {rtt}, {a.rounds} rounds", "",
               fleet_machine_line(self.busy0), ""] + rows + [""]
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
            lowest = min((k for k in med if k != "agent"), key=lambda k: med[k]["cpu"])
            head = "Targets" if n >= 50 else "Targets (defined at 50 hosts; shown for reference)"
            out.append("")
            out.append(f"{head}, fastest anchor = {fastest}:")
            out.append(f"- wall ≤ 0.75× fastest anchor: {ag['wall']:.3f}s / {fa['wall']:.3f}s = {wr:.2f}× → "
                       f"{'MET' if wr <= 0.75 else 'MISSED'}")
            out.append(f"- client CPU ≤ 0.5× fastest anchor's: {ag['cpu']:.2f}s / {fa['cpu']:.2f}s = {cr:.2f}× → "
                       f"{'MET' if cr <= 0.5 else 'MISSED'}"
                       f" (lowest-CPU anchor {lowest}: {med[lowest]['cpu']:.2f}s, {ag['cpu'] / med[lowest]['cpu']:.2f}×)")
        self.publish(out)


def main():
    ap = fleet_parser(__doc__)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rtt", type=parse_duration, default=0.0, help="added round-trip time, e.g. 40ms")
    run_fleet_bench(ap, Bench)


if __name__ == "__main__":
    main()
