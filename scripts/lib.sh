# Shared by the scripts: sourced, not run.

# Where cargo puts build output (honours CARGO_TARGET_DIR).
target_dir() {
  cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
