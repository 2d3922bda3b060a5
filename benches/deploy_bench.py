#!/usr/bin/env python3
"""Measures `agent deploy` against the tools users would script the same work with, on one fleet.

Called by benches/deploy (which installs the tools, builds agent and agent-web and brings the
fleet up):

    deploy_bench.py --fleet-dir DIR --agent PATH --web PATH --venv DIR [--rounds R] [--tools ...]

The work ("deploy-like"): put one binary (the agent-web binary agent deploys) and one systemd
unit (the text agent renders for it) on every host, then run three commands with sudo:
create the install folder, install both files, start the program in the background unless it
runs already. Each anchor does exactly that; agent deploys benches/deploy_spec.toml, which
uploads the same binary and unit (plus a 149-byte env file and a 341-byte run script), starts
the program under its supervisor, health-checks it over SSH and writes a deployment record.

Per round and tool (interleaved, the starting tool rotating each round, after one untimed
warm-up cycle each): clean the hosts (untimed), the first run on clean hosts (agent: with an
empty state dir, so no record either), then the unchanged re-run at once. Every run is
validated on every host afterwards (untimed, with `agent exec`): files present with the
expected sha256 and mode, the program answering GET /health. A run that exits non-zero or
fails validation is reported as an error, never as a time. Wall time, client CPU and RSS are
measured as in exec_bench.py (bench_common.measure), with clean_rss.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in benches/
from bench_common import (  # noqa: E402
    FleetBench, Result, anchor_table, fleet_machine_line, fleet_parser, interleaved, log_run, machine_busy, measure,
    run_fleet_bench, sha256,
)

SPEC = os.path.join(HERE, "deploy_spec.toml")
APP_PORT = 8081  # the anchors' copy of the program; agent's own listens on 8080 (the spec)
# The three commands every anchor runs, verbatim. The third starts the program in its own
# session with every stdio stream redirected, so nothing holds the SSH channel open, and
# only if it is not running yet (the re-run leaves it alone, as agent does).
COMMANDS = [
    "sudo mkdir -p /opt/bench/bin",
    "sudo install -m 755 /tmp/app /opt/bench/bin/app"
    " && sudo install -m 644 /tmp/bench.service /etc/systemd/system/bench.service",
    "sudo sh -c 'p=$(cat /opt/bench/app.pid 2>/dev/null) && kill -0 \"$p\" 2>/dev/null || "
    f"{{ setsid /opt/bench/bin/app --port {APP_PORT} --name bench </dev/null >/dev/null 2>&1 & echo $! >/opt/bench/app.pid; }}'",
]

# Untimed, through `agent exec --sudo`: stop what any tool started, remove every file any tool
# wrote, and check nothing is left or still listening. Processes are found by pid file (the
# group of agent's supervisor loop, the anchors' program) or as listeners on the two ports
# in this host's network namespace (`ss -p`), and killed only if they run one of the two
# programs: the fleet's hosts share the machine's pid namespace, so no kill by name.
DEPLOYED = ["/opt/agent", "/etc/agent", "/var/lib/agent", "/var/log/agent", "/opt/bench",
            "/etc/systemd/system/agent-web.service", "/etc/systemd/system/bench.service",
            "/tmp/app", "/tmp/bench.service"]
CLEANUP = f"""
ours() {{ grep -qa -e agent-supervise -e /opt/agent/bin/agent-web -e /opt/bench/bin/app /proc/$1/cmdline 2>/dev/null; }}
for f in /var/lib/agent/run/*.pid /opt/bench/app.pid; do
  [ -f "$f" ] || continue
  p=$(cat "$f")
  case $p in ''|*[!0-9]*|0|1) continue;; esac
  ! ours $p || kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null || true
done
for p in $(ss -ltnpH 'sport = :8080 or sport = :{APP_PORT}' | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
  ! ours $p || kill -KILL $p 2>/dev/null || true
done
rm -rf {' '.join(DEPLOYED)}
i=0
while [ -n "$(ss -ltnH 'sport = :8080 or sport = :{APP_PORT}')" ]; do
  i=$((i+1)); [ $i -lt 50 ] || {{ echo "still listening after cleanup: $(ss -ltnpH)" >&2; exit 1; }}; sleep 0.1
done
for x in {' '.join(DEPLOYED)}; do [ ! -e "$x" ] || {{ echo "$x left after cleanup" >&2; exit 1; }}; done
"""

HEALTH = """i=0
until curl -fsS -m 2 -o /dev/null http://127.0.0.1:{port}/health; do
  i=$((i+1)); [ $i -lt 30 ] || {{ echo "nothing answers :{port}/health" >&2; exit 1; }}; sleep 0.1
done
"""


def check_file(path, sha, mode):
    return (f'[ "$(sha256sum < {path})" = "{sha}  -" ] || {{ echo "{path}: wrong content" >&2; exit 1; }}\n'
            f'[ "$(stat -c %a {path})" = {mode:o} ] || {{ echo "{path}: mode $(stat -c %a {path})" >&2; exit 1; }}\n')


PSSH_LIB_SCRIPT = r"""
import json, sys
from gevent import joinall
from pssh.clients import ParallelSSHClient
cfg = json.load(open(sys.argv[1]))
client = ParallelSSHClient(cfg["hosts"], user=cfg["user"], pkey=cfg["key"], pool_size=len(cfg["hosts"]))
# both files at once (SFTP), then the commands one after the other, every host in parallel
joinall(client.copy_file(cfg["app"], "/tmp/app") + client.copy_file(cfg["unit"], "/tmp/bench.service"),
        raise_error=True)
bad = 0
for cmd in cfg["commands"]:
    output = client.run_command(cmd, stop_on_errors=False)
    client.join(output)
    for h in output:
        if h.exception is not None or h.exit_code != 0:
            bad += 1
            print("FAILED", h.host, cmd, h.exit_code, repr(h.exception), file=sys.stderr)
    if bad:
        break
sys.exit(1 if bad else 0)
"""

FABRIC_SCRIPT = r"""
import json, sys
from fabric import ThreadingGroup
cfg = json.load(open(sys.argv[1]))
group = ThreadingGroup(*cfg["hosts"], user=cfg["user"],
                       connect_kwargs={"key_filename": cfg["key"], "look_for_keys": False, "allow_agent": False})
group.put(cfg["app"], "/tmp/app")  # raises GroupException if any host fails
group.put(cfg["unit"], "/tmp/bench.service")
for cmd in cfg["commands"]:
    group.run(cmd, hide=True, in_stream=False)
group.close()
"""

PYINFRA_DEPLOY = """
from pyinfra.operations import files, server
files.put(name="upload app", src={app!r}, dest="/tmp/app")
files.put(name="upload unit", src={unit!r}, dest="/tmp/bench.service")
server.shell(name="install and start", commands={commands!r})
"""


class Bench(FleetBench):
    def __init__(self, a):
        super().__init__(a, "deploy-")
        if any(port != 22 for _, _, port in self.hosts):
            raise SystemExit("deploy_bench: expects every host on port 22")
        self.env.pop("XDG_STATE_HOME", None)
        self.env["PATH"] = os.path.join(a.venv, "bin") + ":" + self.env.get("PATH", "")
        self.state = None  # agent's XDG_STATE_HOME for the current cycle

    def agent_cmd(self, *args):
        return [self.a.agent, *args]

    # -------------------------------------------------------------- files and per-tool setup
    def setup(self):
        w, n = self.work, self.n
        # agent's --programs folder and the files the anchors upload: the same binary and
        # the same unit text agent renders (named as they land in /tmp)
        self.programs = os.path.join(w, "programs")
        os.makedirs(self.programs)
        shutil.copy2(self.a.web, os.path.join(self.programs, "agent-web"))
        plan = json.loads(subprocess.run(self.agent_cmd("plan", SPEC, "-i", self.inv_path, "--json"),
                                         check=True, capture_output=True, env=self.env).stdout)
        files = {f["path"]: f for f in plan["hosts"][0]["files"]}
        unit_text = files["/etc/systemd/system/agent-web.service"]["source"]["text"]
        self.app = os.path.join(w, "app")
        shutil.copy2(self.a.web, self.app)
        os.chmod(self.app, 0o755)
        self.unit = os.path.join(w, "bench.service")
        open(self.unit, "w").write(unit_text)
        self.app_sha, self.unit_sha = sha256(self.app), sha256(self.unit)
        self.sizes = {
            "binary": os.path.getsize(self.app),
            "unit": os.path.getsize(self.unit),
            "agent_total": os.path.getsize(self.app) + sum(
                len(f["source"]["text"].encode()) for f in files.values() if "text" in f["source"]),
        }
        self.validate_agent = (check_file("/opt/agent/bin/agent-web", self.app_sha, 0o755)
                               + "[ -s /etc/systemd/system/agent-web.service ] || exit 1\n"
                               + HEALTH.format(port=8080))
        self.validate_anchor = (check_file("/opt/bench/bin/app", self.app_sha, 0o755)
                                + check_file("/etc/systemd/system/bench.service", self.unit_sha, 0o644)
                                + 'p=$(cat /opt/bench/app.pid) && grep -qa /opt/bench/bin/app /proc/"$p"/cmdline'
                                + ' || { echo "app not running" >&2; exit 1; }\n'
                                + HEALTH.format(port=APP_PORT))

        # Host keys. agent pins them into inventory.known_hosts beside the fleet's inventory
        # on first contact (the warm-up). OpenSSH-based tools (pssh CLI, Ansible) use
        # StrictHostKeyChecking=accept-new with a known_hosts file in this run's work dir, and
        # pyinfra (paramiko) the same through its data options: the warm-up records the keys,
        # timed runs check them. The parallel-ssh library and Fabric have no known_hosts
        # setting by default (ssh2-python does not check; Fabric auto-adds): they check nothing.
        self.known_hosts = os.path.join(w, "known_hosts")
        self.pyinfra_known_hosts = os.path.join(w, "pyinfra_known_hosts")
        ssh_opts = ["StrictHostKeyChecking=accept-new", f"UserKnownHostsFile={self.known_hosts}",
                    f"IdentityFile={self.key}", "IdentitiesOnly=yes", "BatchMode=yes", "LogLevel=ERROR"]

        # parallel-ssh library, Fabric
        cfg = os.path.join(w, "lib.json")
        json.dump({"hosts": [addr for _, addr, _ in self.hosts], "user": self.user, "key": self.key,
                   "app": self.app, "unit": self.unit, "commands": COMMANDS}, open(cfg, "w"))
        pssh_lib = os.path.join(w, "pssh_lib_deploy.py")
        open(pssh_lib, "w").write(PSSH_LIB_SCRIPT)
        fabric = os.path.join(w, "fabric_deploy.py")
        open(fabric, "w").write(FABRIC_SCRIPT)
        # pssh CLI: one parallel-scp for both files, one parallel-ssh per command
        pssh_hosts = os.path.join(w, "pssh-hosts")
        with open(pssh_hosts, "w") as f:
            for _, addr, _ in self.hosts:
                f.write(f"{self.user}@{addr}\n")
        common = ["-h", pssh_hosts, "-p", str(n), "-t", "120"] + [x for o in ssh_opts for x in ("-O", o)]
        pssh_cli = os.path.join(w, "pssh_cli_deploy.sh")
        with open(pssh_cli, "w") as f:
            f.write("set -e\n")
            f.write(shlex.join(["parallel-scp", *common, self.app, self.unit, "/tmp/"]) + "\n")
            for c in COMMANDS:
                f.write(shlex.join(["parallel-ssh", *common, c]) + "\n")
        # pyinfra
        pyinfra_inv = os.path.join(w, "pyinfra_inventory.py")
        with open(pyinfra_inv, "w") as f:
            f.write("hosts = [\n")
            for name, addr, _ in self.hosts:
                f.write(f"    ({name!r}, {{'ssh_hostname': {addr!r}}}),\n")
            f.write("]\n")
        pyinfra_deploy = os.path.join(w, "pyinfra_deploy.py")
        open(pyinfra_deploy, "w").write(PYINFRA_DEPLOY.format(app=self.app, unit=self.unit, commands=COMMANDS))
        # Ansible
        self.write_ansible([(name, addr, None) for name, addr, _ in self.hosts], True,
                           f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={self.known_hosts}")
        playbook = os.path.join(w, "playbook.yml")
        tasks = [{"name": "upload app", "ansible.builtin.copy": {"src": self.app, "dest": "/tmp/app"}},
                 {"name": "upload unit", "ansible.builtin.copy": {"src": self.unit, "dest": "/tmp/bench.service"}}]
        tasks += [{"name": f"command {i + 1}", "ansible.builtin.shell": c} for i, c in enumerate(COMMANDS)]
        # JSON is YAML: no quoting to get wrong
        json.dump([{"hosts": "fleet", "gather_facts": False, "tasks": tasks}], open(playbook, "w"), indent=1)

        V = lambda x: os.path.join(self.a.venv, "bin", x)  # noqa: E731
        self.tools = {
            "agent": dict(
                argv=self.agent_cmd("deploy", SPEC, "-i", self.inv_path, "--programs", self.programs,
                                    "--no-logs", "--parallel", "64"),
                env=self.agent_env, check=self.check_agent, validate=self.validate_agent,
            ),
            "parallel-ssh (lib)": dict(argv=[V("python"), pssh_lib, cfg]),
            "Fabric": dict(argv=[V("python"), fabric, cfg]),
            "pssh/pscp CLI": dict(argv=["bash", pssh_cli], check=self.check_pssh_cli),
            "pyinfra": dict(
                argv=[V("pyinfra"), pyinfra_inv, pyinfra_deploy, "-y", "--parallel", str(n),
                      "--ssh-user", self.user, "--ssh-key", self.key,
                      "--data", "ssh_strict_host_key_checking=accept-new",
                      "--data", f"ssh_known_hosts_file={self.pyinfra_known_hosts}"],
            ),
            "Ansible": dict(
                argv=[V("ansible-playbook"), "-i", self.ansible_inv, playbook, "-f", str(n)],
                env=self.ansible_env, check=self.check_ansible,
            ),
        }
        if self.a.tools:
            want = [x.strip().lower() for x in self.a.tools.split(",")]
            self.tools = {k: v for k, v in self.tools.items()
                          if k == "agent" or any(k.lower().startswith(x) for x in want)}

    # -------------------------------------------------------------- checks of a tool's output
    def check_agent(self, stdout, stderr, rerun):
        n = self.n
        text = stdout + stderr
        if f"{n} hosts: {n} ok, 0 failed, 0 unreachable" not in text:
            return f"agent: no '{n} hosts: {n} ok' summary"
        if rerun and "nothing changed: no upload" not in text:
            return "agent: the unchanged re-run changed something"
        if not rerun and f"· {n} changed" not in text:
            return f"agent: the first deploy did not change all {n} hosts"
        if not os.path.exists(os.path.join(self.state, "agent", "deployments", "benchdeploy.json")):
            return "agent: no deployment record"
        return None

    def check_pssh_cli(self, stdout, _stderr, _rerun):
        ok = stdout.count("[SUCCESS]")
        want = self.n * (1 + len(COMMANDS))
        return None if ok == want else f"pssh: {ok} of {want} host runs SUCCESS"

    def check_ansible(self, stdout, _stderr, _rerun):
        ok = len(re.findall(r"^\S+\s+:\s+ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0\b", stdout, re.M))
        return None if ok == self.n else f"ansible: {ok} of {self.n} hosts ok in the recap"

    def agent_env(self, env):
        env = dict(env)
        env["XDG_STATE_HOME"] = self.state
        return env

    # -------------------------------------------------------------- runs
    def remote(self, script, what):
        """Runs script with sudo on every host through agent exec (untimed); error text or None."""
        p = subprocess.run(self.agent_cmd("exec", "-i", self.inv_path, "--no-logs", "--sudo", "--", script),
                           env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if p.returncode == 0:
            return None
        bad = [line for line in (p.stdout + p.stderr).splitlines() if " ! " in line][-3:]
        return f"{what} failed (exit {p.returncode}): " + " / ".join(bad)[:300]

    def clean(self):
        err = self.remote(CLEANUP, "cleanup")
        if err:
            raise SystemExit(err)
        if self.state:
            shutil.rmtree(self.state, ignore_errors=True)
        self.state = tempfile.mkdtemp(prefix="state-", dir=self.work)

    def run_once(self, name, rerun):
        t = self.tools[name]
        env = t["env"](self.env) if "env" in t else self.env
        check = t.get("check")
        out = os.path.join(self.work, "stdout.txt")
        r = measure(t["argv"], env, out, self.keep, (lambda o, e: check(o, e, rerun)) if check else (lambda o, e: None),
                    clean_rss=True)
        if r.ok:
            err = self.remote(t.get("validate", self.validate_anchor), "validation")
            if err:
                r.ok, r.err = False, err
        return r

    def cycle_tool(self, name):
        """Clean hosts, first run, unchanged re-run: (first, rerun) Results (rerun None if skipped)."""
        self.clean()
        first = self.run_once(name, False)
        rerun = self.run_once(name, True) if first.ok else None
        return first, rerun

    def run(self):
        a = self.a
        self.busy0 = machine_busy()
        self.setup()
        # One untimed cycle per tool: agent pins host keys, the anchors record theirs, caches warm.
        for name in self.tools:
            f, r = self.cycle_tool(name)
            status = lambda x: "skipped" if x is None else f"{x.wall:.2f}s " + ("ok" if x.ok else "FAILED: " + x.err)  # noqa: E731
            print(f"warm-up {name}: first {status(f)}; re-run {status(r)}", file=sys.stderr, flush=True)
        if not os.path.exists(os.path.join(a.fleet_dir, "inventory.known_hosts")):
            raise SystemExit("agent warm-up did not write its known_hosts beside the inventory")
        names = list(self.tools)
        samples = {kind: {k: [] for k in names} for kind in ("first", "rerun")}
        errors = {kind: {k: [] for k in names} for kind in ("first", "rerun")}
        for rnd, name in interleaved(names, a.rounds):
            first, rerun = self.cycle_tool(name)
            for kind, r in (("first", first), ("rerun", rerun)):
                if r is None:
                    r = Result(False, 0, 0, 0, 0, "not run: the first run failed")
                (samples if r.ok else errors)[kind][name].append(r)
                log_run(f"round {rnd + 1}/{a.rounds} {name:20s} {kind:5s}", r)
        self.clean()
        self.report(samples, errors)

    # -------------------------------------------------------------- report
    def report(self, samples, errors):
        a, n = self.a, self.n
        out = [f"### deploy-like work: {n} hosts, {a.rounds} rounds", "", fleet_machine_line(self.busy0), ""]
        meds = {}
        for kind, title in (("first", "First deploy (clean hosts, agent with no record)"),
                            ("rerun", "Unchanged re-run (at once after the first, nothing cleaned)")):
            rows, med, fastest = anchor_table(self.tools, samples[kind], errors[kind])
            meds[kind] = (med, fastest)
            out += [f"{title}:", ""] + rows + [""]
        for kind in ("first", "rerun"):
            for k, es in errors[kind].items():
                for e in es:
                    out.append(f"- ERROR {k} ({'first' if kind == 'first' else 're-run'}): {e.err} (run not counted)")
        mb = lambda b: f"{b / 1e6:.2f} MB"  # noqa: E731
        out.append(f"- work per host: anchors put the agent-web binary ({mb(self.sizes['binary'])}) and agent's "
                   f"rendered unit ({self.sizes['unit']} bytes) into /tmp, then run {len(COMMANDS)} sudo commands "
                   "(mkdir; install both; start the program with setsid unless running). agent deploy "
                   f"uploads the same binary and unit plus an env file and a run script ({mb(self.sizes['agent_total'])} "
                   "in 4 files, each written atomically), inspects the host, starts the program under its "
                   "supervisor, health-checks GET /health through SSH and writes its deployment record: more than the anchors.")
        out.append("- re-run: agent uploads nothing (checksums match) and restarts nothing; pyinfra and Ansible skip "
                   "the copies by checksum; parallel-ssh, Fabric and pssh copy again. Every anchor runs the 3 commands again "
                   "(the third finds the program running).")
        out.append("- validated after every run with `agent exec --sudo` (untimed): files' sha256 and mode, the "
                   "program's pid and GET /health; hosts wiped (programs killed by pid file, files removed) "
                   "and checked clean before every first run.")
        out.append("- host keys: agent checks keys it pinned in a warm-up; pssh CLI and Ansible use OpenSSH with "
                   "StrictHostKeyChecking=accept-new and a known_hosts file filled by their warm-up; pyinfra the same "
                   "through its data options; the parallel-ssh library and Fabric check none (their defaults).")
        out.append("- Ansible: pipelining on, ControlMaster=auto ControlPersist=60s, gather_facts off, forks = hosts; a "
                   "fresh ControlPath dir per run and its masters killed (their CPU counted) after each run. "
                   "pyinfra: --parallel = hosts. pssh CLI: one parallel-scp (both files) + one parallel-ssh per command.")
        out.append("- client CPU = user+sys of the tool and all its descendants (median); peak RSS = largest single "
                   "process (max over runs; tools start through a short-lived sh, so the harness's own RSS does not "
                   "carry over into theirs); tree RSS = summed RSS of the process tree, sampled every 100 ms (max).")
        first_med, first_fast = meds["first"]
        rerun_med, _ = meds["rerun"]
        if "agent" in first_med and first_fast:
            ag, fa = first_med["agent"]["wall"], first_med[first_fast]["wall"]
            head = "Targets" if n >= 50 else "Targets (defined at 50 hosts; shown for reference)"
            out += ["", f"{head}:"]
            out.append(f"- first deploy wall ≤ 0.75× fastest anchor ({first_fast}): {ag:.3f}s / {fa:.3f}s = "
                       f"{ag / fa:.2f}× → {'MET' if ag / fa <= 0.75 else 'MISSED'}")
            if "agent" in rerun_med:
                rr = rerun_med["agent"]["wall"]
                out.append(f"- unchanged re-run < 1 s: {rr:.3f}s → {'MET' if rr < 1 else 'MISSED'}")
        self.publish(out)


def main():
    ap = fleet_parser(__doc__)
    ap.add_argument("--web", required=True, help="the agent-web binary (x86_64 Linux, release)")
    ap.add_argument("--venv", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    run_fleet_bench(ap, Bench)


if __name__ == "__main__":
    main()
