//! Result encoders: one output chunk per record batch, so results stream.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

use crate::error::{QueryError, Result};

/// Output formats of query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A JSON array of row objects.
    #[default]
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header line.
    Csv,
    /// Arrow IPC stream.
    Arrow,
    /// A Parquet file.
    Parquet,
}

impl Format {
    pub const NAMES: &'static str = "json, ndjson, csv, arrow, parquet";

    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            "arrow" | "arrow-ipc" => Some(Format::Arrow),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// A `Write` target the encoder writes into and the caller drains after each batch.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.lock().expect("buffer lock")))
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Json(arrow::json::Writer<SharedBuffer, arrow::json::writer::JsonArray>),
    Ndjson(arrow::json::Writer<SharedBuffer, arrow::json::writer::LineDelimited>),
    Csv(arrow::csv::Writer<SharedBuffer>),
    Arrow(arrow::ipc::writer::StreamWriter<SharedBuffer>),
    Parquet(Option<ArrowWriter<SharedBuffer>>),
}

/// Encodes batches of one result into chunks of the chosen [`Format`].
pub struct BatchEncoder {
    inner: Inner,
    buffer: SharedBuffer,
    wrote_rows: bool,
    format: Format,
}

fn encode_error(err: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(format!("encoding the result failed: {err}"))
}

impl BatchEncoder {
    pub fn new(format: Format, schema: &SchemaRef) -> Result<Self> {
        let buffer = SharedBuffer::default();
        let sink = buffer.clone();
        let inner = match format {
            Format::Json => Inner::Json(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build(sink),
            ),
            Format::Ndjson => Inner::Ndjson(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build(sink),
            ),
            Format::Csv => Inner::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(sink),
            ),
            Format::Arrow => Inner::Arrow(
                arrow::ipc::writer::StreamWriter::try_new(sink, schema).map_err(encode_error)?,
            ),
            Format::Parquet => Inner::Parquet(Some(
                ArrowWriter::try_new(sink, SchemaRef::clone(schema), None).map_err(encode_error)?,
            )),
        };
        Ok(Self {
            inner,
            buffer,
            wrote_rows: false,
            format,
        })
    }

    /// Encodes one batch; returns the bytes ready to send (possibly empty).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Bytes> {
        if batch.num_rows() > 0 {
            self.wrote_rows = true;
        }
        match &mut self.inner {
            Inner::Json(writer) => writer.write(batch).map_err(encode_error)?,
            Inner::Ndjson(writer) => writer.write(batch).map_err(encode_error)?,
            Inner::Csv(writer) => writer.write(batch).map_err(encode_error)?,
            Inner::Arrow(writer) => writer.write(batch).map_err(encode_error)?,
            Inner::Parquet(writer) => writer
                .as_mut()
                .expect("parquet writer open until finish")
                .write(batch)
                .map_err(encode_error)?,
        }
        Ok(self.buffer.take())
    }

    /// Ends the output; returns the closing bytes.
    pub fn finish(mut self) -> Result<Bytes> {
        match &mut self.inner {
            Inner::Json(writer) => {
                writer.finish().map_err(encode_error)?;
                if !self.wrote_rows {
                    // The array writer writes nothing at all for zero rows.
                    self.buffer.take();
                    return Ok(Bytes::from_static(b"[]"));
                }
            }
            Inner::Ndjson(writer) => writer.finish().map_err(encode_error)?,
            Inner::Csv(_) => {}
            Inner::Arrow(writer) => writer.finish().map_err(encode_error)?,
            Inner::Parquet(writer) => {
                writer
                    .take()
                    .expect("parquet writer open until finish")
                    .close()
                    .map_err(encode_error)?;
            }
        }
        Ok(self.buffer.take())
    }

    pub fn format(&self) -> Format {
        self.format
    }
}

/// Encodes a whole result at once.
pub fn encode_all(format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut encoder = BatchEncoder::new(format, schema)?;
    let mut out = Vec::new();
    for batch in batches {
        out.extend_from_slice(&encoder.write(batch)?);
    }
    out.extend_from_slice(&encoder.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn sample() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("event", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        (schema, vec![batch.clone(), batch])
    }

    #[test]
    fn json_is_one_array_across_batches() {
        let (schema, batches) = sample();
        let out = encode_all(Format::Json, &schema, &batches).unwrap();
        let rows: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 4);
        assert_eq!(rows[1], serde_json::json!({"event": null, "n": 2}));
        assert_eq!(encode_all(Format::Json, &schema, &[]).unwrap(), b"[]");
    }

    #[test]
    fn csv_and_ndjson_have_one_header_and_one_line_per_row() {
        let (schema, batches) = sample();
        let csv = String::from_utf8(encode_all(Format::Csv, &schema, &batches).unwrap()).unwrap();
        assert_eq!(csv, "event,n\na,1\n,2\na,1\n,2\n");
        let ndjson =
            String::from_utf8(encode_all(Format::Ndjson, &schema, &batches).unwrap()).unwrap();
        assert_eq!(ndjson.lines().count(), 4);
    }

    #[test]
    fn arrow_and_parquet_round_trip() {
        let (schema, batches) = sample();
        let ipc = encode_all(Format::Arrow, &schema, &batches).unwrap();
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 4);
        let file = Bytes::from(encode_all(Format::Parquet, &schema, &batches).unwrap());
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 4);
    }
}
