#!/usr/bin/env bash
# Ingest benchmark: Logektor over HTTP with durable acks vs DuckDB converting the same kind of
# events from NDJSON to Parquet offline, in the same run, on the same machine.
#
#   benches/ingest.sh [SECONDS] [CONNECTIONS] [BATCH] [DUCKDB_EVENTS]
#
# Phases: SECONDS at maximum rate (throughput, CPU per event, RSS); 30 s at half the rate it
# reached (ack latency) with freshness probes meanwhile (acknowledged -> visible in /v1/sql);
# freshness again with the server idle; then DuckDB's offline conversion of the same kind of
# events. Prints every figure and the ratios; results go into benches/README.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
connections=${2:-8}
batch=${3:-100}
duck_events=${4:-1000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logektor-target}"
out=benches/out
mkdir -p "$out"
cargo build --release -q -p logektor -p logektor-loadgen
bin="$CARGO_TARGET_DIR/release"
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install --quiet duckdb

data=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
"$bin/logektor" serve --data-dir "$data" --listen 127.0.0.1:18181 \
  --write-key bench=bench-key --read-token bench-token --log warn > "$out/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18181/health >/dev/null && break; sleep 0.1; done

echo "== Logektor: ${seconds}s, $connections connections, batches of $batch"
"$bin/logektor-loadgen" send --url http://127.0.0.1:18181 --write-key bench-key \
  --batch "$batch" --connections "$connections" --duration "${seconds}s" --server-pid "$server" | tee "$out/logektor.tsv"

half=$(awk -F'\t' '$1=="events_per_s"{printf "%d", $2/2}' "$out/logektor.tsv")
echo "== Logektor: 30s at half that rate ($half events/s), freshness probes meanwhile"
"$bin/logektor-loadgen" send --url http://127.0.0.1:18181 --write-key bench-key \
  --batch "$batch" --connections "$connections" --duration 30s --rate "$half" \
  | sed 's/^/half_rate_/' > "$out/logektor-half.tsv" &
half_pid=$!
sleep 5
"$bin/logektor-loadgen" freshness --url http://127.0.0.1:18181 --write-key bench-key \
  --read-token bench-token --probes 200 --pause 50ms | tee "$out/freshness.tsv"
wait "$half_pid"
grep -E "half_rate_(events_per_s|ack_p50_ms|ack_p99_ms|ack_p999_ms|statuses)" "$out/logektor-half.tsv"
echo "== freshness with the server idle"
"$bin/logektor-loadgen" freshness --url http://127.0.0.1:18181 --write-key bench-key \
  --read-token bench-token --probes 200 --pause 20ms | sed 's/^freshness_/idle_freshness_/'
kill -TERM "$server"; wait "$server" || true
table_bytes=$(du -sb "$data/events" | cut -f1)
events=$(awk -F'\t' '$1=="accepted_events"{print $2}' "$out/logektor.tsv")
echo "table_bytes_per_event	$(python3 -c "print(round($table_bytes/$events,1))")"

echo "== DuckDB: NDJSON -> Parquet, $duck_events events, 2 threads"
"$bin/logektor-loadgen" ndjson --events "$duck_events" --out "$out/events.ndjson"
python3 - "$out/events.ndjson" "$out/duckdb.parquet" <<'PY' | tee "$out/duckdb.tsv"
import os, resource, sys, time, duckdb
src, dst = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads TO 2")
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
con.execute(f"COPY (SELECT * FROM read_json('{src}')) TO '{dst}' (FORMAT parquet)")
elapsed = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
n = con.execute(f"SELECT count(*) FROM '{dst}'").fetchone()[0]
print(f"duckdb_events\t{n}")
print(f"duckdb_events_per_s\t{n/elapsed:.0f}")
print(f"duckdb_cpu_s_per_million_events\t{cpu/n*1e6:.2f}")
print(f"duckdb_parquet_bytes_per_event\t{os.path.getsize(dst)/n:.1f}")
PY
python3 - "$out/logektor.tsv" "$out/duckdb.tsv" <<'PY'
import sys
rows = {}
for path in sys.argv[1:]:
    for line in open(path):
        key, _, value = line.rstrip("\n").partition("\t")
        rows[key] = value
l, d = float(rows["events_per_s"]), float(rows["duckdb_events_per_s"])
print(f"ratio_events_per_s (logektor/duckdb)\t{l/d:.2f}")
if "server_cpu_s_per_million_events" in rows:
    lc, dc = float(rows["server_cpu_s_per_million_events"]), float(rows["duckdb_cpu_s_per_million_events"])
    print(f"ratio_cpu_per_event (logektor/duckdb)\t{lc/dc:.2f}")
PY
