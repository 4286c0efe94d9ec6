#!/usr/bin/env python3
"""Times the same queries on Logektor (over its HTTP API) and on DuckDB (over the very Parquet
files of Logektor's Delta table), both hot, and checks that they agree.

Called by benches/query.sh, which loads the table and starts the server:

    query_compare.py URL READ_TOKEN TABLE_DIR QUERIES_DIR RUNS OUT_TSV

For each query: one warm-up run on each side, then RUNS timed runs; the median is reported.
Logektor's time is the whole HTTP round trip (planning, execution, JSON encoding); DuckDB's is
`execute(...).fetchall()` in this process, with 2 threads (the machine has 2 cores).
"""

import datetime as dt
import json
import os
import re
import statistics
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import duckdb
from deltalake import DeltaTable

URL, TOKEN, TABLE, QUERIES, RUNS, OUT = sys.argv[1:7]
RUNS = int(RUNS)
# ONLY=name,name runs just those queries (ad-hoc names or report names).
ONLY = set(filter(None, os.environ.get("ONLY", "").split(",")))

# The generated traffic starts on 2024-05-01 and spans a few days.
FROM = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
TO = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)
# Report parameters that differ from the defaults, to match the generated events.
REPORT_PARAMS = {
    "from": FROM,
    "to": TO,
    "property": "currency",
    "steps": "Product Viewed,Added to Cart,Checkout Started,Order Completed",
    "event": "Order Completed",
}

# Ad-hoc queries: (name, Logektor SQL, DuckDB SQL or None when the text is the same).
ADHOC = [
    ("count by day",
     "SELECT event_date, count(*) AS events FROM events GROUP BY event_date ORDER BY event_date",
     None),
    ("top pages",
     "SELECT page_path, count(*) AS views FROM events WHERE type = 'page' "
     "GROUP BY page_path ORDER BY views DESC, page_path LIMIT 10",
     None),
    ("distinct visitors",
     "SELECT count(DISTINCT coalesce(user_id, anonymous_id)) AS visitors FROM events",
     None),
    ("LIKE on URLs",
     "SELECT count(*) AS n FROM events WHERE page_url LIKE '%utm_campaign=spring_sale%'",
     None),
    ("JSON property filter",
     "SELECT count(*) AS n, sum(CAST(json_as_text(properties, 'price') AS BIGINT)) AS revenue "
     "FROM events WHERE type = 'track' AND json_as_text(properties, 'product_id') = 'sku-7'",
     "SELECT count(*) AS n, sum(CAST(json_extract_string(properties, '$.price') AS BIGINT)) AS revenue "
     "FROM events WHERE type = 'track' AND json_extract_string(properties, '$.product_id') = 'sku-7'"),
    ("selective time range",
     "SELECT count(*) AS n, count(DISTINCT anonymous_id) AS visitors FROM events "
     "WHERE timestamp >= '2024-05-02T10:00:00Z' AND timestamp < '2024-05-02T10:10:00Z'",
     "SELECT count(*) AS n, count(DISTINCT anonymous_id) AS visitors FROM events "
     "WHERE timestamp >= TIMESTAMPTZ '2024-05-02 10:00:00+00' "
     "AND timestamp < TIMESTAMPTZ '2024-05-02 10:10:00+00'"),
    ("wide GROUP BY",
     "SELECT browser, os, device_type, utm_source, referrer_host, type, count(*) AS n "
     "FROM events GROUP BY browser, os, device_type, utm_source, referrer_host, type "
     "ORDER BY n DESC, browser, os, device_type, utm_source, referrer_host, type LIMIT 20",
     None),
]


def to_duckdb(sql):
    """Logektor's (DataFusion's) dialect of the reports, in DuckDB's words."""
    # A timestamp as microseconds since the epoch.
    sql = re.sub(r"CAST\(([\w.$]+) AS BIGINT\)", r"epoch_us(\1)", sql)
    sql = sql.replace("to_unixtime(now())", "epoch(now())")
    sql = re.sub(r"json_as_text\(([^,]+), ", r"json_extract_string(\1, '$.' || ", sql)
    sql = sql.replace("cardinality(", "len(")
    # Logektor's url_host(x) is this expression (a test in logektor-query holds it to it).
    sql = re.sub(
        r"url_host\(([\w.]+)\)",
        lambda m: "regexp_replace(regexp_replace(lower(coalesce(" + m.group(1) + ", '')), "
        "'^[a-z]+://([^@/]*@)?(www\\.)?', ''), '[/:?#].*$', '')",
        sql,
    )
    # DataFusion divides integers as integers; DuckDB's `/` is a float division.
    sql = re.sub(r"\) / (\d+)", r") // \1", sql)
    return sql


def logektor(path, body=None):
    request = urllib.request.Request(
        URL + path,
        data=body.encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise QueryFailed(f"HTTP {err.code}: {err.read().decode()[:200]}") from None


class QueryFailed(Exception):
    pass


def timed(run):
    run()  # warm-up: the data is hot for both sides
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, result


def numbers(rows):
    out = []
    for row in rows:
        values = row.values() if isinstance(row, dict) else row
        out.append([round(float(v), 4) for v in values
                    if isinstance(v, (int, float)) and not isinstance(v, bool)])
    return out


def agree(ours, theirs):
    if len(ours) != len(theirs):
        return f"rows differ: {len(ours)} vs {len(theirs)}"
    a, b = numbers(ours), numbers(theirs)
    if a != b:
        return "values differ"
    return "same"


files = DeltaTable(TABLE).file_uris()
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("SET TimeZone = 'UTC'")
con.execute(
    f"CREATE VIEW events AS SELECT * FROM read_parquet({files!r}, hive_partitioning = true)")
total = con.execute("SELECT count(*) FROM events").fetchone()[0]
print(f"table: {len(files)} Parquet files, {total} events")

results = []
for name, ours, theirs in ADHOC:
    if ONLY and name not in ONLY:
        continue
    ms_l, rows_l = timed(lambda: logektor("/v1/sql?format=json", ours))
    ms_d, rows_d = timed(lambda: con.execute(theirs or ours).fetchall())
    results.append(("ad-hoc", name, ms_l, ms_d, agree(rows_l, rows_d)))
    print(f"  {name}: {ms_l:.1f} ms vs {ms_d:.1f} ms", flush=True)

for file in sorted(os.listdir(QUERIES)):
    if not file.endswith(".sql"):
        continue
    name = file[:-4]
    if ONLY and name not in ONLY:
        continue
    text = open(os.path.join(QUERIES, file)).read()
    declared = {}
    for line in text.splitlines():
        match = re.match(r"-- param: (\w+) (\S+) = ([^:]*?) :", line)
        if match:
            declared[match[1]] = (match[2], match[3].strip())
    query = {}
    params = {}
    for param, (kind, default) in declared.items():
        value = REPORT_PARAMS.get(param, default)
        if isinstance(value, dt.datetime):
            query[param] = value.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif param in REPORT_PARAMS:
            query[param] = value
        if kind == "int" or kind.startswith("int("):
            value = int(value)
        params[param] = value
    path = f"/v1/reports/{name}?" + urllib.parse.urlencode(query)
    duck_sql = to_duckdb(text)
    used = {p: v for p, v in params.items() if re.search(rf"\${p}\b", duck_sql)}
    try:
        ms_l, rows_l = timed(lambda: logektor(path))
    except QueryFailed as err:
        ms_l, rows_l = float("nan"), None
        verdict = f"Logektor error: {err}"
    try:
        ms_d, rows_d = timed(lambda: con.execute(duck_sql, used).fetchall())
        if rows_l is not None:
            verdict = agree(rows_l, rows_d)
    except duckdb.Error as err:
        ms_d, verdict = float("nan"), f"DuckDB error: {str(err).splitlines()[0]}"
    results.append(("report", name, ms_l, ms_d, verdict))
    print(f"  {name}: {ms_l:.1f} ms vs {ms_d:.1f} ms, {verdict}", flush=True)

with open(OUT, "w") as out:
    print("kind\tquery\tlogektor_ms\tduckdb_ms\tratio\tresults", file=out)
    print(f"{'query':28} {'Logektor':>10} {'DuckDB':>10} {'ratio':>7}  results")
    for kind, name, ms_l, ms_d, verdict in results:
        ratio = ms_l / ms_d if ms_l == ms_l and ms_d == ms_d and ms_d > 0 else float("nan")
        print(f"{kind}\t{name}\t{ms_l:.1f}\t{ms_d:.1f}\t{ratio:.2f}\t{verdict}", file=out)
        print(f"{(kind + ': ' + name):28} {ms_l:9.1f}ms {ms_d:9.1f}ms {ratio:6.2f}x  {verdict}")
sys.stdout.flush()
# deltalake's Python bindings can abort at interpreter shutdown (see README): skip teardown.
os._exit(0)
