#!/usr/bin/env bash
# Overload: offer more concurrent ingest requests than the server admits, at maximum rate, and
# watch what it promises (RELIABILITY.md §3): excess requests shed with 429 + Retry-After,
# bounded memory, /health answering fast, and every acknowledged event in the table.
#
#   benches/overload.sh [SECONDS=60] [CONNECTIONS=512] [MAX_CONCURRENT_INGEST=64]
#
# Default settings otherwise. The load generator does not back off on 429 (the worst case);
# a probe asks /health every 200 ms throughout.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
connections=${2:-512}
max_concurrent=${3:-64}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logektor-target}"
out=benches/out
mkdir -p "$out"
cargo build --release -q -p logektor -p logektor-loadgen
bin="$CARGO_TARGET_DIR/release"
ulimit -n 65536 2>/dev/null || true

data=$(mktemp -d)
trap 'kill "$server" "$probe" 2>/dev/null || true; rm -rf "$data"' EXIT
"$bin/logektor" serve --data-dir "$data" --listen 127.0.0.1:18182 \
  --write-key bench=bench-key --read-token bench-token --log warn \
  --max-concurrent-ingest "$max_concurrent" > "$out/overload-server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18182/health >/dev/null && break; sleep 0.1; done

: > "$out/overload-health.txt"
(
  while kill -0 "$server" 2>/dev/null; do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 10 \
      http://127.0.0.1:18182/health >> "$out/overload-health.txt" || echo "000 10" >> "$out/overload-health.txt"
    sleep 0.2
  done
) &
probe=$!

echo "== overload: ${seconds}s, $connections connections, --max-concurrent-ingest $max_concurrent"
"$bin/logektor-loadgen" send --url http://127.0.0.1:18182 --write-key bench-key \
  --batch 100 --connections "$connections" --duration "${seconds}s" --server-pid "$server" \
  | tee "$out/overload.tsv"
kill -TERM "$server"; wait "$server" || true
kill "$probe" 2>/dev/null || true

python3 - "$out/overload-health.txt" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
times = sorted(float(t) * 1000 for code, t in rows)
ok = sum(1 for code, _ in rows if code == "200")
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print(f"health_probes\t{len(rows)}\nhealth_ok\t{ok}")
print(f"health_ms_p50\t{pick(0.5):.1f}\nhealth_ms_p99\t{pick(0.99):.1f}\nhealth_ms_max\t{times[-1]:.1f}")
PY
accepted=$(awk -F'\t' '$1=="accepted_events"{print $2}' "$out/overload.tsv")
stored=$("$bin/logektor" sql --data-dir "$data" --format csv "SELECT count(*) AS n FROM events" | tail -1)
echo "accepted_events	$accepted"
echo "stored_events	$stored"
[ "$accepted" = "$stored" ] && echo "every acknowledged event stored: yes" || echo "every acknowledged event stored: NO"
