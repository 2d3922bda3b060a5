# benches/lib.sh - sourced by the bench wrappers (after setting ROOT): progress lines, venvs,
# the servers a wrapper starts in the background (stopped on the way out, waited for until
# they are up, reported on) and the local fleet a wrapper brings up (brought down again).
# The server helpers run Python as $PY.

BENCH=benches/${0##*/} # the wrapper, in its messages

log() { printf 'bench: %s\n' "$*" >&2; }

make_venv() { # DIR: a venv there unless it has one
	[[ -x $1/bin/python ]] && return
	log "creating venv $1"
	python3 -m venv "$1"
}

# ---- servers: the wrapper adds each one's pid to PIDS and calls stop_on_exit

PIDS=()
stop() { # TERM, then STOP_WAIT seconds (default 5) for each to exit, then KILL
	local pid
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq $((${STOP_WAIT:-5} * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
}
stop_on_exit() {
	trap stop EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

free_port() {
	"$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# until_up NAME PID PORT LOG SECONDS WHAT CODE: runs Python CODE (the port in sys.argv[1])
# every 0.1 s until it succeeds; if NAME dies first or SECONDS pass, shows its log and exits.
until_up() {
	local i
	for ((i = 0; i < $5 * 10; i++)); do
		kill -0 "$2" 2>/dev/null || { echo "$BENCH: $1 died; its log ($4):" >&2; tail -20 "$4" >&2; exit 1; }
		"$PY" -c "$7" "$3" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "$BENCH: $1 $6 on 127.0.0.1:$3 after $5 s; its log ($4):" >&2
	tail -20 "$4" >&2
	exit 1
}
wait_up() { # NAME PID PORT LOG: until the port takes connections
	until_up "$@" 15 "not listening" 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1).close()'
}

report_exit() { # STATUS: prints $WORK/report.md, copies it to REPORT if set, exits with STATUS
	cat "$WORK/report.md"
	[[ -z $REPORT ]] || cp "$WORK/report.md" "$REPORT"
	exit "$1"
}

# ---- fleet FLEET_NAME in FLEET_DIR (tests/fleet)

fleet() { bash "$ROOT/tests/fleet" "$@" --name "$FLEET_NAME" --dir "$FLEET_DIR"; }
down() { fleet down >/dev/null 2>&1 || log "fleet down failed (run: tests/fleet down --name $FLEET_NAME --dir $FLEET_DIR)"; }
down_on_exit() {
	trap down EXIT
	trap 'exit 130' INT TERM
}

need_pssh() { # Debian's pssh (parallel-ssh, parallel-scp) unless installed
	command -v parallel-ssh >/dev/null && command -v parallel-scp >/dev/null && return
	log "apt-get installing pssh"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=300 install -y -q pssh >&2 ||
		{ apt-get update -q >&2 && apt-get -o DPkg::Lock::Timeout=300 install -y -q pssh >&2; }
}
