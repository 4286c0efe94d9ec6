#!/usr/bin/env bash
# The one test command (README, and CI through .ci/run): installs what the tests need when it
# is missing, then runs the same checks CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are reused across runs on the same machine; a fresh machine simply builds cold.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logektor-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Debian packages need root; use sudo when not running as root.
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "$@" >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "$@" >/dev/null; }
}

# Python: the Delta Lake reader (an independent implementation) and the real SDKs the
# compatibility tests drive.
python_packages=("deltalake>=1.0" "pyarrow>=14" "segment-analytics-python>=2.3" "posthog>=6" "rudder-sdk-python>=2.1")
if ! python3 -c "import deltalake, pyarrow, segment.analytics, posthog, rudderstack.analytics" >/dev/null 2>&1; then
  echo "installing Python test dependencies: ${python_packages[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${python_packages[@]}"
fi
# Node: @segment/analytics-node, posthog-node and playwright-core, pinned by package-lock.json.
clients=crates/logektor/tests/clients
if ! command -v node >/dev/null 2>&1; then
  echo "installing Node.js and npm"
  apt_install nodejs npm
fi
if [ ! -d "$clients/node_modules/playwright-core" ] || [ "$clients/package-lock.json" -nt "$clients/node_modules/.package-lock.json" ]; then
  echo "installing Node test dependencies (npm ci in $clients)"
  (cd "$clients" && npm ci --no-audit --no-fund --loglevel=error)
fi
# The browser tests run Debian's Chromium headless.
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Chromium"
  apt_install chromium
fi
# jemalloc, the server's allocator, is C built with make and a C compiler.
if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
  echo "installing make and gcc"
  apt_install make gcc libc6-dev
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
echo "== cargo test --workspace --all-targets --no-fail-fast"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
