//! How rows are laid out in Parquet: sort order and encoding settings.

use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::record_batch::RecordBatch;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};

use crate::Result;

/// Rows per Parquet row group: large enough for good compression and cheap metadata, small
/// enough that time-range filters skip most of a file (the figure Parseable, OpenObserve and
/// InfluxDB 3 settled on).
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Sort order inside each file: partition first (so the writer's split keeps runs together),
/// then the filters reports use most — source, event type, event name — then time. Equal
/// values then sit together, which makes dictionaries and run lengths compress well and lets
/// row-group and page statistics prune time ranges and event names.
const SORT_COLUMNS: &[&str] = &["event_date", "source", "type", "event", "timestamp"];

/// Sorts a batch for [`SORT_COLUMNS`].
pub fn sort_for_layout(batch: &RecordBatch) -> Result<RecordBatch> {
    if batch.num_rows() <= 1 {
        return Ok(batch.clone());
    }
    let columns = SORT_COLUMNS
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|values| SortColumn {
            values: std::sync::Arc::clone(values),
            options: None,
        })
        .collect::<Vec<_>>();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// Parquet settings for every file Logektor writes.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_dictionary_enabled(true)
        // Page-level statistics also write the column index, which DataFusion uses to skip pages.
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}
