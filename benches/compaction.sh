#!/usr/bin/env bash
# Compaction benchmark: the same queries over a table made of many one-flush files, then after
# compaction, in the same run; and the server's start-up time (table load) before and after.
#
#   benches/compaction.sh [SECONDS=120] [EVENTS_PER_S=2000]
#
# The server flushes as often as it can (every 20 ms when a commit is quicker than that) for
# SECONDS, so small files pile up as a day of one-second flushes would, only faster. Queries
# run over HTTP, hot (best of 5), before and after compaction.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
rate=${2:-2000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logektor-target}"
out=benches/out
mkdir -p "$out"
cargo build --release -q -p logektor -p logektor-loadgen
bin="$CARGO_TARGET_DIR/release"
data=$(mktemp -d)
port=18182
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT

start_server() {
  "$bin/logektor" serve --data-dir "$data" --listen 127.0.0.1:$port --write-key bench=bench-key \
    --read-token bench-token --admin-token bench-admin --compaction-interval 0s --vacuum-interval 0s \
    --flush-interval "$1" --log warn >> "$out/compaction-server.log" 2>&1 &
  server=$!
  for _ in $(seq 600); do curl -sf http://127.0.0.1:$port/health >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
files() { curl -sf -H "Authorization: Bearer bench-admin" http://127.0.0.1:$port/v1/admin/table | python3 -c "import json,sys; t=json.load(sys.stdin); print(t['files'], t['rows'])"; }

queries=(
  "SELECT event_date, count(*) FROM events GROUP BY 1 ORDER BY 1"
  "SELECT page_path, count(*) AS n FROM events WHERE type = 'page' GROUP BY 1 ORDER BY n DESC LIMIT 10"
  "SELECT count(DISTINCT coalesce(user_id, anonymous_id)) FROM events"
  "SELECT count(*) FROM events WHERE page_url LIKE '%utm_source=news%'"
  "SELECT event, count(*) FROM events WHERE type = 'track' GROUP BY 1 ORDER BY 2 DESC"
  "SELECT count(*) FROM events WHERE timestamp >= now() - INTERVAL '5 minutes'"
)
measure() {
  local label=$1
  for q in "${queries[@]}"; do
    best=$(for _ in 1 2 3 4 5; do
      curl -sf -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer bench-token" \
        http://127.0.0.1:$port/v1/sql --data-binary "$q"
    done | sort -n | head -1)
    printf '%s\t%s\t%s\n' "$label" "$best" "$q"
  done
}
cold() {
  # Restart and time start-up until /health answers: it loads the table (log or checkpoint).
  kill -TERM "$server"; wait "$server" || true
  local start; start=$(date +%s.%N)
  start_server 1s
  echo "$1	startup_s	$(python3 -c "import time; print(round(time.time() - $start, 3))")"
}

start_server 20ms
echo "== loading for ${seconds}s at $rate events/s, flushing as often as commits allow"
"$bin/logektor-loadgen" send --url http://127.0.0.1:$port --write-key bench-key --batch 10 \
  --connections 2 --rate "$rate" --duration "${seconds}s" > "$out/compaction-load.tsv"
sleep 1
echo "before: files rows = $(files)"
# Not a pipeline: the server must stay a child of this shell to be restarted.
result="$out/compaction.tsv"
: > "$result"
measure before >> "$result"
cold before >> "$result"
start=$(date +%s.%N)
curl -sf -X POST -H "Authorization: Bearer bench-admin" "http://127.0.0.1:$port/v1/admin/table/optimize?force=true" > "$out/compaction-report.json"
curl -sf -X POST -H "Authorization: Bearer bench-admin" http://127.0.0.1:$port/v1/admin/table/checkpoint > /dev/null
echo "after	compaction_s	$(python3 -c "import time; print(round(time.time() - $start, 2))")" >> "$result"
echo "after: files rows = $(files)"
measure after >> "$result"
cold after >> "$result"
cat "$result"
