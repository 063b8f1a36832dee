#!/bin/sh
# bin/@NAME@: runs the @NAME@ release (built by `host release`), as the
# script of a `mix release`:
#
#   start          the node, in the foreground
#   start_iex      the node, in the foreground, with a console (alias: console)
#   daemon         the node, in the background; returns once it is ready
#   daemon_iex     a daemon, then a console attached to it
#   remote         a console attached to the running node
#   rpc "COMMAND"  one console command on the running node
#   eval "COMMAND" one console command on a fresh node (no HTTP, no cluster)
#   stop           stops the running node; returns once it is gone
#   restart        stop, then daemon
#   pid            the running node's OS process id
#   version        the release's name and version
#   versions       the release's versions, and the running node's
#   upgrade VSN    hot-swaps the running node to version VSN (added with
#                  `host release --add`), which later starts run
#   downgrade VSN  the same, to an older version: states are handed down
#
# Configured by RELEASE_NODE, RELEASE_COOKIE, RELEASE_DISTRIBUTION,
# RELEASE_TMP, RELEASE_ROOT and the app's TODO_PORT, from the environment or
# releases/VSN/env.sh; host options go in releases/VSN/vm.args.
set -e

RELEASE_ROOT=${RELEASE_ROOT:-$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd -P)}
RELEASE_NAME=${RELEASE_NAME:-@NAME@}
RELEASE_VSN=${RELEASE_VSN:-$(cat "$RELEASE_ROOT/releases/start_erl.data")}
RELEASE_COMMAND=${1:-}
REL_VSN_DIR=$RELEASE_ROOT/releases/$RELEASE_VSN
export RELEASE_ROOT RELEASE_NAME RELEASE_VSN RELEASE_COMMAND

if [ -f "$REL_VSN_DIR/env.sh" ]; then
  . "$REL_VSN_DIR/env.sh"
fi

RELEASE_VM_ARGS=${RELEASE_VM_ARGS:-$REL_VSN_DIR/vm.args}
HOST=$RELEASE_ROOT/bin/host

# The value vm.args gives option $1, or nothing: read by the host, with the
# same rules as when it starts (quotes, ${VAR}, several options per line).
vm_arg() {
  "$HOST" vm-arg "$RELEASE_VM_ARGS" "$1"
}

# The node's name and cookie: the environment (or env.sh), else vm.args,
# else the release's name and its COOKIE file. Passed to the host through
# the environment (a command line is visible to every user).
if [ -z "${RELEASE_NODE:-}" ]; then
  RELEASE_NODE=$(vm_arg node)
  RELEASE_NODE=${RELEASE_NODE:-$RELEASE_NAME}
fi
if [ -z "${RELEASE_COOKIE:-}" ]; then
  RELEASE_COOKIE=$(vm_arg cookie)
  if [ -z "$RELEASE_COOKIE" ]; then
    RELEASE_COOKIE=$(cat "$RELEASE_ROOT/releases/COOKIE")
  fi
fi
RELEASE_TMP=${RELEASE_TMP:-$RELEASE_ROOT/tmp}
export RELEASE_NODE RELEASE_COOKIE RELEASE_TMP

# Each node of this release keeps its own data and logs.
NODE_DIR=$(printf '%s' "$RELEASE_NODE" | tr -c 'A-Za-z0-9_.@-' '_')
RELEASE_DATA=${RELEASE_DATA:-$RELEASE_ROOT/data/$NODE_DIR}
LOG_DIR=$RELEASE_TMP/log/$NODE_DIR

run_node() {
  exec "$HOST" run --args-file "$RELEASE_VM_ARGS" --data-dir "$RELEASE_DATA" \
    --compile-cache "$RELEASE_ROOT/lib/compiled" "$@"
}

case $RELEASE_COMMAND in
  start)
    run_node
    ;;
  start_iex | console)
    run_node --console
    ;;
  daemon)
    run_node --daemon --log-dir "$LOG_DIR"
    ;;
  daemon_iex)
    "$0" daemon
    exec "$HOST" remote "$RELEASE_NODE"
    ;;
  remote)
    exec "$HOST" remote "$RELEASE_NODE"
    ;;
  rpc)
    if [ $# -ne 2 ]; then
      echo "usage: $0 rpc \"COMMAND\"" >&2
      exit 1
    fi
    exec "$HOST" rpc "$RELEASE_NODE" "$2"
    ;;
  eval)
    if [ $# -ne 2 ]; then
      echo "usage: $0 eval \"COMMAND\"" >&2
      exit 1
    fi
    exec "$HOST" run --args-file "$RELEASE_VM_ARGS" --data-dir "$RELEASE_DATA" \
      --compile-cache "$RELEASE_ROOT/lib/compiled" --eval "$2"
    ;;
  stop)
    exec "$HOST" stop "$RELEASE_NODE"
    ;;
  restart)
    "$0" stop
    exec "$0" daemon
    ;;
  pid)
    exec "$HOST" pid "$RELEASE_NODE"
    ;;
  version)
    echo "$RELEASE_NAME $RELEASE_VSN"
    ;;
  versions)
    for dir in "$RELEASE_ROOT"/releases/*/lib; do
      vsn=$(basename "$(dirname "$dir")")
      if [ "$vsn" = "$RELEASE_VSN" ]; then
        echo "* $vsn (starts)"
      else
        echo "  $vsn"
      fi
    done
    if "$HOST" rpc "$RELEASE_NODE" versions 2>/dev/null; then :; else
      echo "($RELEASE_NODE is not running)"
    fi
    ;;
  upgrade | downgrade)
    if [ $# -ne 2 ]; then
      echo "usage: $0 $RELEASE_COMMAND VSN" >&2
      exit 1
    fi
    TARGET_VSN=$2
    TARGET_LIB=$RELEASE_ROOT/releases/$TARGET_VSN/lib
    if [ ! -d "$TARGET_LIB" ]; then
      echo "no version $TARGET_VSN in $RELEASE_ROOT/releases (add it with host release --add)" >&2
      exit 1
    fi
    DIRECTION=
    if [ "$RELEASE_COMMAND" = downgrade ]; then
      DIRECTION=--down
    fi
    # Each component in turn; the first that fails stops the upgrade (it
    # rolled back by itself: that component runs what it ran before).
    for wasm in "$TARGET_LIB"/*.wasm; do
      "$HOST" swap "$RELEASE_NODE" "$(basename "$wasm" .wasm)" "$wasm" --commit $DIRECTION
    done
    printf '%s' "$TARGET_VSN" >"$RELEASE_ROOT/releases/start_erl.data"
    echo "$RELEASE_NODE runs $RELEASE_NAME $TARGET_VSN, which it starts from now on"
    ;;
  *)
    sed -n '2,20s/^# \{0,1\}//p' "$0" >&2
    if [ -n "$RELEASE_COMMAND" ]; then
      echo "unknown command: $RELEASE_COMMAND" >&2
    fi
    exit 1
    ;;
esac
