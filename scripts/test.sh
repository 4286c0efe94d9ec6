#!/usr/bin/env bash
# The one test command (README, and CI through .ci/run): installs what the tests need when it
# is missing, then runs the same checks CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are reused across runs on the same machine; a fresh machine simply builds cold.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logektor-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The direct-read test uses the Python Delta Lake reader, an independent implementation.
if ! python3 -c "import deltalake, pyarrow" >/dev/null 2>&1; then
  echo "installing Python test dependencies (deltalake, pyarrow)"
  python3 -m pip install --quiet --disable-pip-version-check "deltalake>=1.0" "pyarrow>=14"
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

echo "== cargo fmt --all --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test --workspace --all-targets"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
