//! Helpers shared by this crate's tests.

use arrow::record_batch::RecordBatch;

/// The lines of `batches` as a printed table, sorted: rows compare regardless of their order.
pub(crate) fn sorted_lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut lines: Vec<String> = arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}
