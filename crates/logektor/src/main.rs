//! The `logektor` command: thin on purpose; the work is in the library crates.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use logektor_query::{Format, QueryConfig};
use logektor_server::config::ServeArgs;

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
    Serve(ServeArgs),
    /// Run SQL against the data folder without a server (stop the server first).
    Sql(SqlArgs),
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
        Command::Serve(args) => logektor_server::run(args),
        Command::Sql(args) => run_sql(args),
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
        let schema = stream.schema();
        let batches = stream.collect().await?;
        let mut stdout = std::io::stdout().lock();
        let format = match args.format {
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
            format, &schema, &batches,
        )?)?;
        if matches!(args.format, OutputFormat::Json) {
            writeln!(stdout)?;
        }
        Ok(())
    })
}
