#!/usr/bin/env python3
"""Measures `agent copy` of one large file to one host against OpenSSH's sftp (put).

Called by benches/upload (which makes the file, builds agent and brings the fleet up):

    upload_bench.py --fleet-dir DIR --agent PATH --file PATH [--rounds R] [--report FILE]

Uploads the file to the inventory's first host, as its login user, into /tmp. Tools run
interleaved (round-robin, the starting tool rotating each round) after one untimed warm-up
run each. Before every run the remote file is removed and the machine's dirty pages are
written back (`sync`, untimed), so no run pays for the one before; after every run the
remote sha256 must equal the local one, or the run is reported as an error, never as a time.
Wall time, client CPU and RSS are measured as in exec_bench.py (bench_common.measure),
with clean_rss.

The anchors: sftp's `put` with OpenSSH's defaults (what users have), the same with
`-c aes256-gcm@openssh.com` (the cipher agent negotiates, so both encrypt alike), and
`put -f`, which fsyncs the file on the host at the end, as agent copy does.
"""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in benches/
from bench_common import (  # noqa: E402
    FleetBench, fleet_machine_line, fleet_parser, machine_busy, measure, medians, run_fleet_bench, sha256,
)

DEST = "/tmp/agent-bench-upload.bin"
BASELINE = "sftp (put)"


class Bench(FleetBench):
    def __init__(self, a):
        super().__init__(a, "upload-")
        self.name, self.addr, self.port = self.hosts[0]
        self.size = os.path.getsize(a.file)
        self.sha = sha256(a.file)
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
        r = measure(self.tools[name], self.env, None, self.keep, lambda o, e: None, clean_rss=True)
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
        self.busy0 = machine_busy()
        self.setup()
        samples, errors = self.timed_runs(os.path.join(self.a.fleet_dir, "inventory.known_hosts"), 24,
                                          lambda r: f" ({self.size / r.wall / 1e6:6.0f} MB/s)" if r.wall else "")
        self.prepare()
        self.report(samples, errors)

    def report(self, samples, errors):
        a = self.a
        med = medians(samples)
        out = [f"### upload: one {self.size / 1e6:.0f} MB file (random bytes) to one host, {a.rounds} rounds", "",
               fleet_machine_line(self.busy0), ""]
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
            walls = ", ".join(f"{w:.2f}" for w in sorted(r.wall for r in samples[k]))
            out.append(f"| {k}{bad} | {m['wall']:.3f} | {self.size / m['wall'] / 1e6:.0f} | {ratio} | {m['cpu']:.2f} | "
                       f"{m['rss']:.0f} | {m['tree']:.0f} | {walls} |")
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
        self.publish(out)


def main():
    ap = fleet_parser(__doc__)
    ap.add_argument("--file", required=True, help="the local file to upload")
    ap.add_argument("--rounds", type=int, default=5)
    run_fleet_bench(ap, Bench, tools=False)


if __name__ == "__main__":
    main()
