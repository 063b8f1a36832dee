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
