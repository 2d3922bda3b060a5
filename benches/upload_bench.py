#!/usr/bin/env python3
"""Measures `agent copy` of one large file to one host against OpenSSH's sftp (put).

Called by benches/upload (which makes the file, builds agent and brings the fleet up):

    upload_bench.py --fleet-dir DIR --agent PATH --file PATH [--rounds R] [--report FILE]

Uploads the file to the inventory's first host, as its login user, into /tmp. Tools run
interleaved (round-robin, the starting tool rotating each round) after one untimed warm-up
run each. Before every run the remote file is removed and the machine's dirty pages are
written back (`sync`, untimed), so no run pays for the one before; after every run the
remote sha256 must equal the local one, or the run is reported as an error, never as a time.
Wall time, client CPU and RSS are measured as in exec_bench.py (whose helpers this imports),
with clean_rss.

The anchors: sftp's `put` with OpenSSH's defaults (what users have), the same with
`-c aes256-gcm@openssh.com` (the cipher agent negotiates, so both encrypt alike), and
`put -f`, which fsyncs the file on the host at the end, as agent copy does.
"""

import argparse
import ctypes
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in benches/
import exec_bench as eb  # noqa: E402  (measure, machine_busy, PR_SET_CHILD_SUBREAPER)

DEST = "/tmp/agent-bench-upload.bin"
BASELINE = "sftp (put)"


class Bench:
    def __init__(self, a):
        self.a = a
        self.work = tempfile.mkdtemp(prefix="upload-", dir=a.work_root)
        self.inv_path = os.path.join(a.fleet_dir, "inventory.toml")
        inv = tomllib.load(open(self.inv_path, "rb"))
        self.key = os.path.join(a.fleet_dir, "labsuser.pem")
        self.user = inv.get("defaults", {}).get("user", "ubuntu")
        h = inv["hosts"][0]
        self.name, self.addr, self.port = h["name"], h["address"], h.get("port", 22)
        self.keep = set()
        self.env = dict(os.environ)
        self.env.pop("SSH_AUTH_SOCK", None)
        self.env["HOME"] = os.path.join(self.work, "home")  # no user ssh config leaks in
        os.makedirs(self.env["HOME"])
        self.size = os.path.getsize(a.file)
        self.sha = eb.sha256(a.file)
        # OpenSSH: the same key as agent, and host keys checked against a known_hosts file in
        # this run's work dir: StrictHostKeyChecking=accept-new records the key on first
        # contact (the warm-up), later runs check it. agent pins keys beside the inventory.
        self.known_hosts = os.path.join(self.work, "known_hosts")
        self.base_opts = ["-i", self.key, "-o", f"Port={self.port}", "-o", "IdentitiesOnly=yes",
                          "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                          "-o", f"UserKnownHostsFile={self.known_hosts}"]
        self.ssh_opts = self.base_opts + ["-o", "LogLevel=ERROR"]
        self.dest = f"{self.user}@{self.addr}"

    def ssh(self, command, check=True):
        return subprocess.run(["ssh", *self.ssh_opts, self.dest, command], env=self.env, check=check,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)

    def setup(self):
        def batch(name, line):
            path = os.path.join(self.work, name)
            with open(path, "w") as f:
                f.write(line + "\n")
            return path

        put = batch("put.batch", f'put "{self.a.file}" {DEST}')
        put_f = batch("put-f.batch", f'put -f "{self.a.file}" {DEST}')
        self.tools = {
            "agent": [self.a.agent, "copy", "-i", self.inv_path, "--host", self.name, "--no-logs", self.a.file, DEST],
            BASELINE: ["sftp", "-b", put, *self.ssh_opts, self.dest],
            "sftp (put, aes256-gcm)": ["sftp", "-b", put, "-c", "aes256-gcm@openssh.com", *self.ssh_opts, self.dest],
            "sftp (put -f: fsync)": ["sftp", "-b", put_f, *self.ssh_opts, self.dest],
        }

    def prepare(self):
        self.ssh(f"rm -f {DEST}")
        os.sync()

    def run_tool(self, name):
        self.prepare()
        r = eb.measure(self.tools[name], self.env, None, self.keep, lambda o, e: None, clean_rss=True)
        if r.ok:
            p = self.ssh(f"stat -c %s {DEST} && sha256sum {DEST}", check=False)
            got = p.stdout.split()
            if p.returncode != 0 or len(got) < 2 or got[0] != str(self.size) or got[1] != self.sha:
                r.ok = False
                r.err = f"remote file wrong: {p.stdout.strip()[:120]} {p.stderr.strip()[:120]}"
        return r

    def ciphers(self):
        """What OpenSSH negotiates by default, as `ssh -v` reports it."""
        p = subprocess.run(["ssh", "-v", *self.base_opts, self.dest, "true"],
                           env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        m = re.search(r"kex: client->server cipher: (\S+)", p.stderr)
        return m.group(1) if m else "?"

    def run(self):
        a = self.a
        self.busy0 = eb.machine_busy()
        self.setup()
        for name in self.tools:
            r = self.run_tool(name)
            print(f"warm-up {name}: {r.wall:.2f}s {'ok' if r.ok else 'FAILED: ' + r.err}", file=sys.stderr, flush=True)
        if not os.path.exists(os.path.join(a.fleet_dir, "inventory.known_hosts")):
            raise SystemExit("agent warm-up did not write its known_hosts beside the inventory")
        names = list(self.tools)
        samples = {k: [] for k in names}
        errors = {k: [] for k in names}
        for rnd, name in eb.interleaved(names, a.rounds):
            r = self.run_tool(name)
            (samples if r.ok else errors)[name].append(r)
            speed = f" ({self.size / r.wall / 1e6:6.0f} MB/s)" if r.wall else ""
            eb.log_run(f"round {rnd + 1}/{a.rounds} {name:24s}", r, speed)
        self.prepare()
        self.report(samples, errors)

    def report(self, samples, errors):
        a = self.a
        med = {}
        for k, rs in samples.items():
            if rs:
                med[k] = dict(wall=statistics.median(r.wall for r in rs), cpu=statistics.median(r.cpu for r in rs),
                              rss=max(r.maxrss for r in rs) / 2**20, tree=max(r.tree_rss for r in rs) / 2**20,
                              walls=sorted(r.wall for r in rs))
        model = "?"
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        out = [f"### upload: one {self.size / 1e6:.0f} MB file (random bytes) to one host, {a.rounds} rounds", ""]
        out.append(f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {os.cpu_count()} cores, {model}; "
                   f"{platform.system()} {platform.release()}; CPU busy in the second before start {self.busy0:.0%}")
        out.append("")
        out.append(f"| tool | wall median (s) | MB/s | vs {BASELINE} | client CPU (s) | peak RSS (MB) | tree RSS (MB) | all walls (s) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---|")
        base = med.get(BASELINE)
        for k in self.tools:
            if k not in med:
                out.append(f"| {k} | ERROR | | | | | | |")
                continue
            m = med[k]
            ratio = f"{m['wall'] / base['wall']:.2f}×" if base else "-"
            bad = f" ({len(errors[k])} failed runs)" if errors[k] else ""
            out.append(f"| {k}{bad} | {m['wall']:.3f} | {self.size / m['wall'] / 1e6:.0f} | {ratio} | {m['cpu']:.2f} | "
                       f"{m['rss']:.0f} | {m['tree']:.0f} | {', '.join(f'{w:.2f}' for w in m['walls'])} |")
        out.append("")
        for k, es in errors.items():
            for e in es:
                out.append(f"- ERROR {k}: {e.err} (run not counted)")
        out.append(f"- to {self.name} ({self.addr}, a tests/fleet host: sshd in a network namespace on this machine, so "
                   f"the host's sshd shares the 2 cores with the client) as {self.user}, into {DEST} (an overlay on "
                   "this machine's disk); the remote file removed and `sync` run before every run, its sha256 "
                   "checked after.")
        out.append(f"- ciphers: agent prefers aes256-gcm (src/ssh/mod.rs); sftp by default negotiates "
                   f"{self.ciphers()}. agent copy writes a temporary file, fsyncs it and renames it; sftp put writes "
                   "the target in place without fsync (put -f fsyncs).")
        out.append("- client CPU = user+sys of the tool and its children (ssh under sftp), median; peak RSS = largest "
                   "single process (max over runs; tools start through a short-lived sh, so the harness's own RSS "
                   "does not carry over into theirs); tree RSS = summed RSS of the tree, sampled every 100 ms (max).")
        if "agent" in med and base:
            r = med["agent"]["wall"] / base["wall"]
            out += ["", f"Target: agent at least 0.9× sftp's speed (wall ratio ≤ 1.11): "
                        f"{med['agent']['wall']:.3f}s / {base['wall']:.3f}s = {r:.2f}× "
                        f"(speed {1 / r:.2f}×) → {'MET' if r <= 1 / 0.9 else 'MISSED'}"]
        eb.publish("\n".join(out) + "\n", a.report, None if a.keep_work else self.work)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fleet-dir", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--file", required=True, help="the local file to upload")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work-root", default="/var/tmp/agent-bench")
    ap.add_argument("--report", help="append the Markdown report to this file too")
    ap.add_argument("--keep-work", action="store_true")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(eb.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    Bench(a).run()


if __name__ == "__main__":
    main()
