//! SQL without a running server: the table plus whatever the WAL holds that the table does not
//! (after a crash, or while a server is stopped before its final flush). Read-only: it neither
//! cuts torn WAL tails nor deletes anything.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use logektor_event::{decode, to_record_batch};
use logektor_ingest::record::IngestRecord;
use logektor_query::{EventsView, QueryConfig, QueryEngine, StaticSource};
use logektor_table::{TableLocation, TableSnapshot};

use crate::{keys, layout};

/// A consistent view of everything acknowledged under `data_dir`.
pub async fn view(data_dir: &Path) -> anyhow::Result<EventsView> {
    anyhow::ensure!(
        data_dir.is_dir(),
        "data folder {} does not exist",
        data_dir.display()
    );
    let node_id = std::fs::read_to_string(layout::node_id_file(data_dir)).unwrap_or_default();
    let app_id = keys::app_id(node_id.trim());
    // The WAL first, then the table: a running server deletes WAL segments only after the
    // commit that holds them, so a record gone from the WAL by the time it is read is in the
    // snapshot opened afterwards, and records the snapshot already holds are dropped below.
    // A segment the server deletes between listing and reading fails the read; a second look
    // no longer lists it.
    let wal_dir = layout::wal_dir(data_dir);
    let mut attempts = 0;
    let records = loop {
        match logektor_wal::read_dir_records(&wal_dir, 0) {
            Ok(records) => break records,
            Err(_) if attempts < 3 => attempts += 1,
            Err(err) => return Err(err).context("reading the WAL"),
        }
    };
    let table_dir = layout::table_dir(data_dir);
    let table = if table_dir.is_dir() {
        TableSnapshot::open_latest(&TableLocation::local(&table_dir)?, &app_id)
            .await
            .context("opening the events table")?
    } else {
        TableSnapshot::default()
    };
    let records: Vec<_> = records
        .into_iter()
        .filter(|record| record.seq > table.committed_seq())
        .collect();
    let mut buffered = Vec::with_capacity(records.len());
    for record in records {
        let ingest = IngestRecord::decode(&record.payload)
            .map_err(|reason| anyhow::anyhow!("WAL record {}: {reason}", record.seq))?;
        let events = decode(&ingest.meta, ingest.endpoint, &ingest.body)
            .with_context(|| format!("WAL record {}", record.seq))?;
        buffered.push(to_record_batch(&events));
    }
    Ok(EventsView { table, buffered })
}

/// A query engine over [`view`].
pub async fn engine(data_dir: &Path, config: QueryConfig) -> anyhow::Result<QueryEngine> {
    let view = view(data_dir).await?;
    Ok(QueryEngine::new(config, Arc::new(StaticSource(view)))?)
}
