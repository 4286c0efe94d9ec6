//! `logektor import`: backfill history from NDJSON (Segment messages), CSV or Parquet files.
//!
//! Each file is its own writer in the table: its application transaction is
//! `logektor-import-<id of the file>`, and every commit records how many of the file's records
//! it has consumed. An interrupted import therefore resumes exactly where its last commit ended,
//! and importing a finished file again does nothing. Rows whose `message_id` is already in the
//! table (for the dates the chunk covers), or earlier in the same chunk, are skipped, so an
//! overlapping export or a file imported under another name adds no duplicates.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::{cast, cast_with_options, concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::prelude::SessionContext;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use logektor_event::schema::events_schema;
use logektor_event::{Event, RequestMeta, decode_stored, to_record_batch};
use logektor_table::{EventTable, TableLocation};

use crate::layout;

/// Records per commit: large enough that a big import makes few, well-sized files.
pub const DEFAULT_CHUNK_ROWS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    Ndjson,
    Csv,
    Parquet,
}

impl ImportFormat {
    fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".ndjson") || name.ends_with(".jsonl") || name.ends_with(".json") {
            Some(Self::Ndjson)
        } else if name.ends_with(".csv") {
            Some(Self::Csv)
        } else if name.ends_with(".parquet") {
            Some(Self::Parquet)
        } else {
            None
        }
    }
}

/// Options of one import run.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub data_dir: PathBuf,
    /// Source of rows that do not name one (NDJSON always; CSV and Parquet without `source`).
    pub source: String,
    /// `None`: from each file's extension.
    pub format: Option<ImportFormat>,
    pub chunk_rows: usize,
    /// Skip records that do not decode (counted) instead of stopping at the first.
    pub skip_invalid: bool,
}

/// What one file contributed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Records read in this run (after those an earlier run committed).
    pub records: u64,
    pub imported: u64,
    pub duplicates: u64,
    pub invalid: u64,
    /// Records an earlier, interrupted run had already committed.
    pub resumed_from: u64,
}

/// Imports every file in turn; returns one report per file.
pub async fn run(files: &[PathBuf], options: &ImportOptions) -> anyhow::Result<Vec<FileReport>> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating {}", options.data_dir.display()))?;
    let location = TableLocation::local(&layout::table_dir(&options.data_dir))?;
    let mut reports = Vec::with_capacity(files.len());
    for path in files {
        let report = import_file(&location, path, options)
            .await
            .with_context(|| format!("importing {}", path.display()))?;
        eprintln!(
            "{}: {} records read, {} imported, {} duplicates skipped, {} invalid{}",
            path.display(),
            report.records,
            report.imported,
            report.duplicates,
            report.invalid,
            if report.resumed_from > 0 {
                format!(" (resumed after {} records)", report.resumed_from)
            } else {
                String::new()
            }
        );
        reports.push(report);
    }
    Ok(reports)
}

/// A stable identity of a file for its application transaction: its absolute path, size and
/// first 64 KiB.
fn file_identity(path: &Path) -> anyhow::Result<(uuid::Uuid, u64)> {
    let absolute = path
        .canonicalize()
        .with_context(|| format!("reading {}", path.display()))?;
    let size = std::fs::metadata(&absolute)?.len();
    // The file's beginning too, so another file at the same path with the same size is not
    // taken for one already imported.
    let mut head = Vec::with_capacity(64 * 1024);
    File::open(&absolute)?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    let mut name = format!("{}\0{size}\0", absolute.display()).into_bytes();
    name.extend_from_slice(&head);
    Ok((uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, &name), size))
}

async fn import_file(
    location: &TableLocation,
    path: &Path,
    options: &ImportOptions,
) -> anyhow::Result<FileReport> {
    let format = options
        .format
        .or_else(|| ImportFormat::from_path(path))
        .with_context(
            || "unknown file type; name it .ndjson, .jsonl, .csv or .parquet, or pass --format",
        )?;
    let (file_id, size) = file_identity(path)?;
    let mut table =
        EventTable::open_or_create(location, &format!("logektor-import-{file_id}")).await?;
    let resumed_from = table.committed_seq();
    let mut report = FileReport {
        resumed_from,
        ..FileReport::default()
    };
    let progress = progress_bar(size, format);
    let mut reader = RecordReader::open(path, format, options, file_id, resumed_from, &progress)?;
    let mut consumed = resumed_from;
    loop {
        let (batch, read, invalid) = reader.next_chunk(options.chunk_rows)?;
        if read == 0 {
            break;
        }
        consumed += read;
        report.records += read;
        report.invalid += invalid;
        let fresh = deduplicate(&table, batch).await?;
        report.duplicates += read - invalid - fresh.num_rows() as u64;
        report.imported += fresh.num_rows() as u64;
        table.append(&fresh, consumed).await?;
        if progress.is_hidden() {
            eprintln!(
                "{}: committed {consumed} records ({} imported, {} duplicates)",
                path.display(),
                report.imported,
                report.duplicates
            );
        }
    }
    progress.finish_and_clear();
    Ok(report)
}

fn progress_bar(size: u64, format: ImportFormat) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(size),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    let template = match format {
        ImportFormat::Parquet => "{bar:40} {percent}% of the row groups, {elapsed} ({eta} left)",
        _ => "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ({eta} left)",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Keeps the first row of each message id, and only ids the table does not hold yet for the
/// dates the batch covers.
async fn deduplicate(table: &EventTable, batch: RecordBatch) -> anyhow::Result<RecordBatch> {
    if batch.num_rows() == 0 {
        return Ok(batch);
    }
    let ids = batch
        .column_by_name("message_id")
        .context("message_id column")?
        .as_string::<i32>();
    let mut seen = HashSet::with_capacity(ids.len());
    let first: BooleanArray = (0..ids.len())
        .map(|i| Some(!ids.is_null(i) && seen.insert(ids.value(i))))
        .collect();
    let batch = filter_record_batch(&batch, &first)?;

    if table.version().is_none() {
        return Ok(batch);
    }
    let dates = batch
        .column_by_name(logektor_event::schema::EVENT_DATE)
        .context("event_date column")?
        .as_primitive::<arrow::datatypes::Date32Type>();
    let (Some(min), Some(max)) = (arrow::compute::min(dates), arrow::compute::max(dates)) else {
        return Ok(batch);
    };
    let ctx = SessionContext::new();
    let Some(provider) = table.snapshot().provider(&ctx.state()).await? else {
        return Ok(batch);
    };
    ctx.register_table("events", provider)?;
    ctx.register_batch("incoming", batch)?;
    // Dates are days since the epoch computed here, not user text.
    let sql = format!(
        "SELECT i.* FROM incoming i LEFT ANTI JOIN \
         (SELECT message_id FROM events WHERE event_date BETWEEN \
          CAST(CAST({min} AS INT) AS DATE) AND CAST(CAST({max} AS INT) AS DATE)) e \
         ON i.message_id = e.message_id"
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    Ok(concat_batches(&events_schema(), &batches)?)
}

/// Reads records of one file from a starting record onwards, in chunks of canonical rows.
enum RecordReader {
    Ndjson {
        lines: std::io::Split<BufReader<ProgressRead>>,
        meta: RequestMeta,
        next_record: u64,
        skip_invalid: bool,
        location: String,
    },
    Table {
        batches: Box<dyn Iterator<Item = anyhow::Result<RecordBatch>>>,
        pending: Option<RecordBatch>,
        source: String,
    },
}

/// A reader that advances the progress bar by the bytes read.
struct ProgressRead {
    inner: File,
    progress: ProgressBar,
}

impl Read for ProgressRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

impl RecordReader {
    fn open(
        path: &Path,
        format: ImportFormat,
        options: &ImportOptions,
        file_id: uuid::Uuid,
        skip: u64,
        progress: &ProgressBar,
    ) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let reader = || {
            BufReader::with_capacity(
                1 << 20,
                ProgressRead {
                    inner: file.try_clone().expect("clone a file handle"),
                    progress: progress.clone(),
                },
            )
        };
        match format {
            ImportFormat::Ndjson => {
                let mut lines = reader().split(b'\n');
                // Records an earlier run committed; reading past them is cheap next to parsing.
                for _ in 0..skip {
                    if lines.next().transpose()?.is_none() {
                        break;
                    }
                }
                Ok(Self::Ndjson {
                    lines,
                    // Generated message ids derive from the file and line, so a resumed or
                    // repeated import generates the same ones (and dedup catches them).
                    meta: RequestMeta::new(now_micros(), options.source.clone(), file_id.as_u128()),
                    next_record: skip,
                    skip_invalid: options.skip_invalid,
                    location: path.display().to_string(),
                })
            }
            ImportFormat::Csv => {
                // The header alone, through a handle of its own (clones share the offset).
                let mut header = BufReader::new(File::open(path)?);
                let (schema, _) = arrow::csv::reader::Format::default()
                    .with_header(true)
                    .infer_schema(&mut header, Some(0))?;
                // Every column as text; conversion to the canonical types happens per column.
                let text_schema = Arc::new(arrow::datatypes::Schema::new(
                    schema
                        .fields()
                        .iter()
                        .map(|f| arrow::datatypes::Field::new(f.name(), DataType::Utf8, true))
                        .collect::<Vec<_>>(),
                ));
                let csv = arrow::csv::ReaderBuilder::new(text_schema)
                    .with_header(true)
                    .with_batch_size(8192)
                    .build(reader())?;
                let batches = csv.map(|b| b.map_err(anyhow::Error::from));
                Self::table(Box::new(batches), skip, &options.source)
            }
            ImportFormat::Parquet => {
                let builder =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                        file.try_clone()?,
                    )?;
                let rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
                let parquet = builder
                    .with_batch_size(8192)
                    .with_offset(usize::try_from(skip).unwrap_or(usize::MAX))
                    .build()?;
                progress.set_length(rows);
                progress.set_position(skip);
                let bar = progress.clone();
                let batches = parquet.map(move |b| {
                    let b = b?;
                    bar.inc(b.num_rows() as u64);
                    Ok(b)
                });
                Self::table(Box::new(batches), 0, &options.source)
            }
        }
    }

    /// CSV and Parquet: skip `skip` rows, then convert batches to the canonical schema.
    fn table(
        mut batches: Box<dyn Iterator<Item = anyhow::Result<RecordBatch>>>,
        mut skip: u64,
        source: &str,
    ) -> anyhow::Result<Self> {
        let mut pending = None;
        while skip > 0 {
            let Some(batch) = batches.next().transpose()? else {
                break;
            };
            let rows = batch.num_rows() as u64;
            if rows <= skip {
                skip -= rows;
            } else {
                pending = Some(batch.slice(skip as usize, (rows - skip) as usize));
                skip = 0;
            }
        }
        Ok(Self::Table {
            batches,
            pending,
            source: source.to_owned(),
        })
    }

    /// Up to `rows` records: the canonical batch, records read, records skipped as invalid.
    fn next_chunk(&mut self, rows: usize) -> anyhow::Result<(RecordBatch, u64, u64)> {
        match self {
            Self::Ndjson {
                lines,
                meta,
                next_record,
                skip_invalid,
                location,
            } => {
                let mut events: Vec<Event> = Vec::with_capacity(rows.min(1 << 16));
                let mut read = 0u64;
                let mut invalid = 0u64;
                while events.len() + (invalid as usize) < rows {
                    let Some(line) = lines.next().transpose()? else {
                        break;
                    };
                    let record = *next_record;
                    *next_record += 1;
                    read += 1;
                    let text = trim_line(&line);
                    if text.is_empty() {
                        // Blank lines are records too (they keep the count aligned with lines).
                        invalid += 1;
                        continue;
                    }
                    let line_meta = RequestMeta {
                        request_id: meta.request_id.wrapping_add(u128::from(record)),
                        ..meta.clone()
                    };
                    match decode_stored(&line_meta, &format!("line {}", record + 1), text) {
                        Ok(event) => events.push(event),
                        Err(err) if *skip_invalid => {
                            invalid += 1;
                            tracing::debug!(error = %err, "skipping an invalid record");
                        }
                        Err(err) => bail!(
                            "{location}: {err} (fix the line, or pass --skip-invalid; the import resumes after the last commit)"
                        ),
                    }
                }
                Ok((to_record_batch(&events), read, invalid))
            }
            Self::Table {
                batches,
                pending,
                source,
            } => {
                let mut parts = Vec::new();
                let mut read = 0usize;
                while read < rows {
                    let batch = match pending.take() {
                        Some(batch) => batch,
                        None => match batches.next().transpose()? {
                            Some(batch) => batch,
                            None => break,
                        },
                    };
                    let wanted = rows - read;
                    let batch = if batch.num_rows() > wanted {
                        *pending = Some(batch.slice(wanted, batch.num_rows() - wanted));
                        batch.slice(0, wanted)
                    } else {
                        batch
                    };
                    read += batch.num_rows();
                    parts.push(to_canonical(&batch, source)?);
                }
                let schema = events_schema();
                Ok((concat_batches(&schema, &parts)?, read as u64, 0))
            }
        }
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

fn now_micros() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

/// A value that does not convert is an error naming the column, not a silent null.
const STRICT: arrow::compute::CastOptions<'static> = arrow::compute::CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// Casts a batch with canonical column names (any subset, any castable types) to the canonical
/// schema: `message_id`, `type` and `timestamp` are required; `received_at` defaults to `timestamp`,
/// `source` to the import's source, `event_date` to the date of `timestamp`, the rest to null.
fn to_canonical(batch: &RecordBatch, default_source: &str) -> anyhow::Result<RecordBatch> {
    let schema: SchemaRef = events_schema();
    let rows = batch.num_rows();
    let column = |name: &str| -> anyhow::Result<Option<Arc<dyn Array>>> {
        let Some(values) = batch.column_by_name(name) else {
            return Ok(None);
        };
        let field = schema.field_with_name(name)?;
        let values = if values.data_type() == &DataType::Utf8 && field.data_type().is_temporal() {
            // "2024-05-01T12:00:00Z" and "2024-05-01 12:00:00" both cast through a timestamp.
            let parsed =
                cast_with_options(values, &logektor_event::schema::timestamp_type(), &STRICT)?;
            cast_with_options(&parsed, field.data_type(), &STRICT)?
        } else {
            cast_with_options(values, field.data_type(), &STRICT)?
        };
        Ok(Some(values))
    };
    let timestamp = column("timestamp")?.context("a \"timestamp\" column is required")?;
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let values = match (field.name().as_str(), column(field.name())?) {
            (_, Some(values)) => values,
            ("message_id", None) => bail!("a \"message_id\" column is required"),
            ("received_at", None) => Arc::clone(&timestamp),
            ("source", None) => {
                Arc::new(arrow::array::StringArray::from(vec![default_source; rows]))
            }
            ("event_date", None) => cast(&cast(&timestamp, &DataType::Date32)?, field.data_type())?,
            (_, None) => new_null_array(field.data_type(), rows),
        };
        if !field.is_nullable() && values.null_count() > 0 {
            bail!("column \"{}\" has empty values", field.name());
        }
        columns.push(values);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}
