#!/usr/bin/env bash
# Query benchmark: the reports and a set of ad-hoc queries on Logektor (HTTP API, hot) and on
# DuckDB over the same Parquet files (hot), side by side, plus storage per event.
#
#   benches/query.sh [EVENTS=10000000] [RUNS=5]
#
# LOGEKTOR_ARGS adds server flags (e.g. LOGEKTOR_ARGS="--query-memory-limit 4GiB").
# The generated NDJSON and the loaded table are kept in benches/out/ and reused by later runs
# with the same EVENTS (delete them to start over). Results: benches/out/query-EVENTS.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-10000000}
runs=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logektor-target}"
out=benches/out
mkdir -p "$out"
cargo build --release -q -p logektor -p logektor-loadgen
bin="$CARGO_TARGET_DIR/release"
python3 -c "import duckdb, deltalake" 2>/dev/null || python3 -m pip install --quiet duckdb deltalake

ndjson="$out/events-$events.ndjson"
data="$out/query-data-$events"
if [ ! -s "$ndjson" ]; then
  "$bin/logektor-loadgen" ndjson --events "$events" --out "$ndjson.tmp"
  mv "$ndjson.tmp" "$ndjson"
fi
if [ ! -e "$data/.loaded" ]; then
  rm -rf "$data"
  start=$(date +%s.%N)
  "$bin/logektor" --log warn import --data-dir "$data" --source web "$ndjson"
  loaded=$(date +%s.%N)
  "$bin/logektor" --log warn table optimize --data-dir "$data" --force > /dev/null
  "$bin/logektor" --log warn table checkpoint --data-dir "$data" > /dev/null
  "$bin/logektor" --log warn table vacuum --data-dir "$data" --grace 0s > /dev/null
  done_=$(date +%s.%N)
  python3 -c "print(f'import {($loaded-$start):.1f} s, optimize {($done_-$loaded):.1f} s')" \
    | tee "$data.load.txt"
  touch "$data/.loaded"
fi

"$bin/logektor" serve --data-dir "$data" --listen 127.0.0.1:18182 \
  --write-key bench=bench-key --read-token bench-token --query-timeout 600s --log warn ${LOGEKTOR_ARGS:-} \
  > "$out/query-server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf http://127.0.0.1:18182/health >/dev/null && break; sleep 0.1; done

echo "== $events events, median of $runs hot runs each"
python3 benches/query_compare.py http://127.0.0.1:18182 bench-token "$data/events" queries \
  "$runs" "$out/query-$events.tsv"

echo "== storage"
"$bin/logektor" table info --data-dir "$data" | python3 -c '
import json, sys
info = json.load(sys.stdin)
print(json.dumps({k: v for k, v in info.items() if not isinstance(v, (list, dict))}))'
table_bytes=$(find "$data/events" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s}')
ndjson_bytes=$(stat -c %s "$ndjson")
python3 - "$ndjson" "$out/duckdb-$events.parquet" <<PY
import os, sys, duckdb
src, dst = sys.argv[1], sys.argv[2]
if not os.path.exists(dst):
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute(f"COPY (SELECT * FROM read_json('{src}')) TO '{dst}' (FORMAT parquet)")
n = $events
duck = os.path.getsize(dst)
print(f"bytes per event: NDJSON {$ndjson_bytes/n:.1f}, DuckDB default Parquet {duck/n:.1f}, "
      f"Logektor {$table_bytes/n:.1f} (ratio to DuckDB {$table_bytes/duck:.2f})")
PY
