//! criterion micro-benchmarks of the hot paths of ingest, on the load generator's traffic:
//!
//! - `decode`: a 100-event Segment batch body → validated events → one Arrow record batch;
//! - `wal_append`: 64 concurrent appends of one such body each, as one fsync'd group commit;
//! - `parquet_encode`: buffered 100-row batches → sorted chunks → a Parquet file in memory,
//!   with the table's writer settings (what a flush does before its commit);
//! - `flush_gather`: the sorted gather of that flush alone, over a full-load flush's worth of
//!   rows, which no longer fit in the caches.
//!
//! `cargo bench -p logektor-micro` (release); `cargo test` runs each once as a smoke test.

use std::hint::black_box;

use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logektor_event::segment::ParsedBody;
use logektor_event::{Endpoint, RequestMeta, to_record_batch};
use logektor_loadgen::traffic;
use logektor_table::{SortedRows, WRITE_CHUNK_ROWS, flush_writer_properties};
use logektor_wal::{Wal, WalConfig};
use parquet::arrow::ArrowWriter;

/// The server's allocator, so allocation costs what it costs there.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BATCH: usize = 100;

fn batch_body(seed: u64, offset: usize) -> Vec<u8> {
    let mut generator = traffic::Generator::new(seed);
    let events: Vec<_> = (0..BATCH)
        .map(|i| generator.event(&format!("micro-{}", offset + i)))
        .collect();
    serde_json::to_vec(&serde_json::json!({ "batch": events })).unwrap()
}

fn meta() -> RequestMeta {
    RequestMeta::new(1_714_600_000_000_000, "web", 7)
}

/// What the ingest path does with a body: rows borrowing from it, then one Arrow batch.
fn decode_batch(body: &[u8]) -> RecordBatch {
    let mut parsed = ParsedBody::parse(Endpoint::Batch, body).unwrap();
    let meta = meta();
    to_record_batch(&parsed.rows(&meta).unwrap())
}

fn decode(c: &mut Criterion) {
    let body = batch_body(1, 0);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("segment_batch_of_100", |b| {
        b.iter(|| decode_batch(black_box(&body)))
    });
    group.finish();
}

fn wal_append(c: &mut Criterion) {
    const CONCURRENT: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::<()>::open(WalConfig::new(dir.path()), 0, |_| {}).unwrap();
    let body = batch_body(2, 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("wal_append");
    group.throughput(Throughput::Bytes((CONCURRENT * body.len()) as u64));
    group.sample_size(20);
    group.bench_function("group_of_64_batch_bodies", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let pending: Vec<_> = (0..CONCURRENT)
                    .map(|_| wal.enqueue(body.clone(), ()).unwrap())
                    .collect();
                for append in pending {
                    append.wait().await.unwrap();
                }
            })
        })
    });
    group.finish();
    drop(wal);
}

fn parquet_encode(c: &mut Criterion) {
    // 20,000 rows keeps the smoke run of `cargo test` short; a flush at full load writes ~100k.
    let batches: Vec<RecordBatch> = (0..200)
        .map(|i| decode_batch(&batch_body(3 + i as u64, i * BATCH)))
        .collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut group = c.benchmark_group("parquet_encode");
    group.throughput(Throughput::Elements(rows as u64));
    group.sample_size(10);
    group.bench_function("sort_and_encode_20k_rows", |b| {
        b.iter(|| {
            let sorted = SortedRows::new(&batches).unwrap();
            let mut file = Vec::new();
            let mut writer = ArrowWriter::try_new(
                &mut file,
                batches[0].schema(),
                Some(flush_writer_properties()),
            )
            .unwrap();
            for chunk in sorted.chunks(WRITE_CHUNK_ROWS) {
                writer.write(&chunk.unwrap()).unwrap();
            }
            writer.close().unwrap();
            file.len()
        })
    });
    group.finish();
}

/// The flush's sorted gather alone: the rows of buffered batches copied into sorted chunks, over
/// as many rows as a flush at full load holds, so the rows span far more memory than the caches
/// (what makes the gather's cost in a profile).
fn flush_gather(c: &mut Criterion) {
    let requests: Vec<RecordBatch> = (0..200)
        .map(|i| decode_batch(&batch_body(300 + i as u64, i * BATCH)))
        .collect();
    // Between flushes the buffer merges request batches into batches of up to 64k rows; each
    // merged batch is a fresh copy, so 2,000 requests' rows lie apart in memory as in a flush.
    let batches: Vec<RecordBatch> = (0..2000)
        .map(|i| requests[(i * 7) % requests.len()].clone())
        .collect::<Vec<_>>()
        .chunks(640)
        .map(|run| arrow::compute::concat_batches(&run[0].schema(), run).unwrap())
        .collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let sorted = SortedRows::new(&batches).unwrap();
    let mut group = c.benchmark_group("flush_gather");
    group.throughput(Throughput::Elements(rows as u64));
    group.sample_size(10);
    group.bench_function("gather_200k_rows", |b| {
        b.iter(|| {
            sorted
                .chunks(WRITE_CHUNK_ROWS)
                .map(|chunk| chunk.unwrap().num_rows())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, decode, wal_append, parquet_encode, flush_gather);
criterion_main!(benches);
