#!/bin/sh
# Sourced by bin/@NAME@ before every command, as `mix release`'s env.sh.
# Set the node's name, its cookie and the app's variables here; what the
# environment already holds should win, hence the ${VAR:-default} form:
#
#   export RELEASE_NODE=${RELEASE_NODE:-prod@10.0.0.1}
#   export RELEASE_COOKIE=${RELEASE_COOKIE:-secret}
#   export TODO_PORT=${TODO_PORT:-5454}
#
# RELEASE_DISTRIBUTION: name (the default), sname (taken as name), or none
# (no cluster, no remote console).
# RELEASE_TMP: where daemons' logs go (default: the release's tmp/).
