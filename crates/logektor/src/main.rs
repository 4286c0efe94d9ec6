//! The `logektor` command: thin on purpose; the work is in the library crates.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use logektor_query::{Format, QueryConfig};
use logektor_server::config::ServeArgs;
use logektor_table::TableLocation;
use logektor_table::maintenance;

/// jemalloc instead of glibc's allocator: the ingest path allocates many small, short-lived
/// strings and JSON maps on several threads, where glibc spent a third of the server's CPU
/// (`_int_malloc`, `malloc_consolidate`) and fragmented its per-thread arenas. jemalloc replaced
/// mimalloc 2.x: in back-to-back 150 s full-load runs it peaked at 680 MiB RSS against 966–986,
/// with 5–9% less CPU per event. It reuses freed pages and returns idle ones from a background
/// thread after seconds, where mimalloc purged them after 10 ms and faulted them back in
/// (benches/README.md, "The 2026-12-06 rows"). Build with `--no-default-features` for the
/// system allocator, which heap profilers such as heaptrack can follow.
///
/// Its options are compiled in from `.cargo/config.toml` (`JEMALLOC_SYS_WITH_MALLOC_CONF`):
/// `oversize_threshold:0` keeps freed extents of 8 MiB and more for reuse instead of purging
/// them at once, which had every large query fault its hash tables back in (the reasons there).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "logektor",
    version,
    about = "Durable tracking-event storage with SQL"
)]
struct Cli {
    /// Log filter, as in RUST_LOG (e.g. "info", "logektor_ingest=debug").
    #[arg(
        long,
        global = true,
        env = "LOGEKTOR_LOG",
        default_value = "info,buoyant_kernel=warn,deltalake_core=warn"
    )]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ingest and query server.
    Serve(Box<ServeArgs>),
    /// Run SQL against the data folder without a server (stop the server first).
    Sql(SqlArgs),
    /// Inspect and tidy the table: info, optimize, vacuum, checkpoint.
    Table {
        #[command(subcommand)]
        command: TableCommand,
    },
    /// Erase a person's events from the table (GDPR). While a server runs, prefer
    /// `POST /v1/admin/forget`: it also covers events not yet flushed.
    Forget(ForgetArgs),
    /// Backfill events from NDJSON (Segment messages), CSV or Parquet files. Resumable: run the
    /// same command again after an interruption. Deduplicated by message_id.
    Import(ImportArgs),
    /// Write the events of a time range as Parquet, NDJSON or CSV.
    Export(ExportArgs),
    /// Run a named report of queries/ without a server, e.g.
    /// `logektor report top_pages --from 2024-05-01 --to 2024-06-01 --param limit=20`;
    /// `logektor report --list` names them with their parameters.
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The data folder the server used.
    #[arg(long, env = "LOGEKTOR_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// List the reports and their parameters instead of running one.
    #[arg(long)]
    list: bool,
    /// Start of the range: 2024-05-01, an RFC 3339 time, now, or -7d (the report's default
    /// otherwise).
    #[arg(long, allow_hyphen_values = true)]
    from: Option<String>,
    /// End of the range (exclusive), in the same forms.
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// One source (default: every source).
    #[arg(long)]
    source: Option<String>,
    /// Another parameter as NAME=VALUE (repeatable), e.g. interval=week, steps=A,B,C.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// The report's name, e.g. overview, top_pages, funnel.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

#[derive(clap::Args)]
struct DataDirArg {
    /// The data folder the server uses.
    #[arg(long, env = "LOGEKTOR_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum TableCommand {
    /// Files, bytes, rows and partitions of the latest version, as JSON.
    Info(DataDirArg),
    /// Merge small files now.
    Optimize {
        #[command(flatten)]
        dir: DataDirArg,
        /// Compact every partition with more than one file, not only those with many small ones.
        #[arg(long)]
        force: bool,
        /// Merge files up to about this size.
        #[arg(long, default_value = "256MiB", value_parser = logektor_server::units::parse_bytes)]
        target_size: usize,
    },
    /// Delete files replaced more than GRACE ago (compaction, retention, erasure).
    Vacuum {
        #[command(flatten)]
        dir: DataDirArg,
        /// Readers of older snapshots may still need replaced files this long.
        #[arg(long, default_value = "1h", value_parser = humantime_duration)]
        grace: std::time::Duration,
    },
    /// Write a checkpoint and drop expired log files.
    Checkpoint(DataDirArg),
}

#[derive(clap::Args)]
struct ForgetArgs {
    #[command(flatten)]
    dir: DataDirArg,
    #[arg(long)]
    user_id: Option<String>,
    #[arg(long)]
    anonymous_id: Option<String>,
}

#[derive(clap::Args)]
struct ImportArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Source of events that do not name one.
    #[arg(long, default_value = "import")]
    source: String,
    /// File format (default: from each file's extension).
    #[arg(long, value_enum)]
    format: Option<logektor_server::import::ImportFormat>,
    /// Records per commit.
    #[arg(long, default_value_t = logektor_server::import::DEFAULT_CHUNK_ROWS)]
    chunk_rows: usize,
    /// Skip records that do not decode instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
    /// Files to import, in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// First instant included: YYYY-MM-DD (UTC) or an RFC 3339 time.
    #[arg(long, value_parser = logektor_server::export::parse_time)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// First instant excluded.
    #[arg(long, value_parser = logektor_server::export::parse_time)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long, value_enum, default_value_t = ExportFormat::Parquet)]
    format: ExportFormat,
    /// Output file (default: standard output).
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Parquet,
    Ndjson,
    Csv,
}

fn humantime_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("invalid duration {text:?}: {err}"))
}

#[derive(clap::Args)]
struct SqlArgs {
    /// The data folder the server used.
    #[arg(long, env = "LOGEKTOR_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// The query, e.g. "SELECT event, count(*) FROM events GROUP BY 1".
    sql: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
    Ndjson,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => logektor_server::run(*args),
        Command::Sql(args) => run_sql(args),
        Command::Table { command } => run_async(run_table(command)),
        Command::Forget(args) => run_async(run_forget(args)),
        Command::Import(args) => run_async(run_import(args)),
        Command::Export(args) => run_async(run_export(args)),
        Command::Report(args) => run_report(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_sql(args: SqlArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let engine =
            logektor_server::offline::engine(&args.data_dir, QueryConfig::default()).await?;
        let stream = engine.execute(&args.sql).await?;
        print_result(stream, args.format).await
    })
}

fn run_report(args: ReportArgs) -> anyhow::Result<()> {
    let reports = logektor_query::reports::Reports::built_in();
    if args.list {
        use std::fmt::Write as _;
        let mut text = String::new();
        for report in reports.iter() {
            writeln!(text, "{} — {}", report.name, report.title)?;
            writeln!(text, "    {}", report.description)?;
            for param in &report.params {
                let default = param
                    .default
                    .as_ref()
                    .map(|d| format!(", default {d}"))
                    .unwrap_or_default();
                let flag = match param.name.as_str() {
                    "from" | "to" | "source" => format!("--{}", param.name),
                    other => format!("--param {other}=…"),
                };
                writeln!(
                    text,
                    "    {flag} ({}{default}) {}",
                    param.kind.name(),
                    param.description
                )?;
            }
        }
        return match std::io::stdout().lock().write_all(text.as_bytes()) {
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        };
    }
    let name = args.name.as_deref().unwrap_or_default();
    let report = reports.get(name)?;
    let mut given: std::collections::HashMap<String, String> = args.params.into_iter().collect();
    for (key, value) in [
        ("from", args.from),
        ("to", args.to),
        ("source", args.source),
    ] {
        if let Some(value) = value {
            given.insert(key.to_owned(), value);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    let params = report.bind(&given, now)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let engine =
            logektor_server::offline::engine(&args.data_dir, QueryConfig::default()).await?;
        let stream = engine
            .execute_with_params(&report.sql, Some(params))
            .await?;
        print_result(stream, args.format).await
    })
}

async fn print_result(
    stream: logektor_query::QueryStream,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let schema = stream.schema();
    let batches = stream.collect().await?;
    let mut stdout = std::io::stdout().lock();
    let encoding = match format {
        OutputFormat::Table => {
            writeln!(
                stdout,
                "{}",
                arrow::util::pretty::pretty_format_batches(&batches)?
            )?;
            return Ok(());
        }
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Json => Format::Json,
        OutputFormat::Ndjson => Format::Ndjson,
    };
    stdout.write_all(&logektor_query::format::encode_all(
        encoding, &schema, &batches,
    )?)?;
    if matches!(format, OutputFormat::Json) {
        writeln!(stdout)?;
    }
    Ok(())
}

fn run_async(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(work)
}

fn table_location(dir: &DataDirArg) -> anyhow::Result<TableLocation> {
    Ok(TableLocation::local(&logektor_server::layout::table_dir(
        &dir.data_dir,
    ))?)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run_table(command: TableCommand) -> anyhow::Result<()> {
    match command {
        TableCommand::Info(dir) => print_json(&maintenance::info(&table_location(&dir)?).await?),
        TableCommand::Optimize {
            dir,
            force,
            target_size,
        } => {
            let config = maintenance::CompactionConfig {
                target_file_bytes: target_size as u64,
                ..maintenance::CompactionConfig::default()
            };
            let location = table_location(&dir)?;
            let report = maintenance::compact(&location, &config, force).await?;
            maintenance::checkpoint(&location).await?;
            print_json(&report)
        }
        TableCommand::Vacuum { dir, grace } => {
            print_json(&maintenance::vacuum(&table_location(&dir)?, grace).await?)
        }
        TableCommand::Checkpoint(dir) => print_json(&serde_json::json!({
            "version": maintenance::checkpoint(&table_location(&dir)?).await?
        })),
    }
}

async fn run_forget(args: ForgetArgs) -> anyhow::Result<()> {
    let person = maintenance::Person {
        user_id: args.user_id,
        anonymous_id: args.anonymous_id,
    };
    anyhow::ensure!(
        person.predicate().is_some(),
        "give --user-id or --anonymous-id"
    );
    tracing::info!(user_id = ?person.user_id, anonymous_id = ?person.anonymous_id, "erasure requested");
    let report = maintenance::erase(&table_location(&args.dir)?, &person).await?;
    print_json(&report)
}

async fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let options = logektor_server::import::ImportOptions {
        data_dir: args.dir.data_dir,
        source: args.source,
        format: args.format,
        chunk_rows: args.chunk_rows.max(1),
        skip_invalid: args.skip_invalid,
    };
    logektor_server::import::run(&args.files, &options).await?;
    Ok(())
}

async fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let format = match args.format {
        ExportFormat::Parquet => Format::Parquet,
        ExportFormat::Ndjson => Format::Ndjson,
        ExportFormat::Csv => Format::Csv,
    };
    let rows = logektor_server::export::run(
        &args.dir.data_dir,
        args.from,
        args.to,
        format,
        args.out.as_ref(),
    )
    .await?;
    eprintln!("exported {rows} events");
    Ok(())
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    /// The options in `.cargo/config.toml` reach the allocator this binary links: a build
    /// that loses them (the variable renamed, the file not read) fails here, not in a profile.
    #[test]
    fn jemalloc_is_built_with_the_workspace_options() {
        let options = tikv_jemalloc_ctl::config::malloc_conf::read().unwrap();
        // (The crate's reading keeps the C string's terminator.)
        assert!(
            options
                .trim_end_matches('\0')
                .split(',')
                .any(|option| option == "oversize_threshold:0"),
            "jemalloc built with {options:?}"
        );
    }
}
