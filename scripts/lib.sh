# Shared by the scripts: sourced, not run.

# Where cargo puts build output: $CARGO_TARGET_DIR when set (relative to the
# repository's top, where the scripts run), `target/` otherwise.
target_dir() {
  local dir="${CARGO_TARGET_DIR:-target}"
  case "$dir" in
    /*) echo "$dir" ;;
    *) echo "$PWD/$dir" ;;
  esac
}

# integration_binary: builds the integration tests (release) and prints the
# path of their binary, to run single tests of it directly.
integration_binary() {
  cargo test --release -p host --test integration --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "integration" and m.get("executable"):
        print(m["executable"])'
}

# Background servers of a benchmark script. Every server is started with
# `start_server`, which records its pid in "$work/pids" (a file, so that a
# server started inside a command substitution is still recorded), and
# `stop_servers` (run from the script's EXIT trap) stops them all.
# The caller sets $work to a temp dir first.

# start_server LOG COMMAND...: starts COMMAND in the background (stdout to
# LOG.out, stderr to LOG.err), waits for its ready line, and prints the
# first 127.0.0.1 port in it.
start_server() {
  local log="$1"; shift
  "$@" >"$log.out" 2>"$log.err" &
  echo $! >>"$work/pids"
  for _ in $(seq 1 600); do
    if grep -q '127.0.0.1:' "$log.out" 2>/dev/null; then
      grep -o '127.0.0.1:[0-9]*' "$log.out" | head -1 | cut -d: -f2
      return
    fi
    sleep 0.1
  done
  echo "server did not start: $(cat "$log.err")" >&2
  return 1
}

# port_after LOG MARKER: the port after MARKER in LOG.out's ready line.
port_after() {
  grep -o "$2[0-9]*" "$1.out" | head -1 | grep -o '[0-9]*$'
}

stop_servers() {
  [ -f "$work/pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$work/pids"
  # Wait for them to go, so the next run starts on a quiet machine.
  while read -r pid; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done <"$work/pids"
}

# free_port: a port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_epmd HOST: a port mapper of HOST's on a free port, recorded as a
# server; exports ERL_EPMD_PORT and a RELEASE_COOKIE (`bench`) for the
# nodes and tools that follow.
start_epmd() {
  export ERL_EPMD_PORT
  ERL_EPMD_PORT="$(free_port)"
  export RELEASE_COOKIE=bench
  "$1" epmd --address 127.0.0.1 --port "$ERL_EPMD_PORT" >/dev/null 2>&1 &
  echo $! >>"$work/pids"
  sleep 0.3
}
