//! Benchmark tools: a deterministic generator of realistic Segment web traffic, and an HTTP load
//! generator that posts pre-built batches (only the message ids are patched per request, so the
//! generator stays cheap per event on a machine it shares with the server).

use logektor_loadgen::traffic;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "logektor-loadgen")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write generated events as NDJSON (one Segment message per line).
    Ndjson {
        #[arg(long)]
        events: usize,
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Write generated batch bodies (`{"batch": [...]}`), one per line.
    Batches {
        #[arg(long)]
        events: usize,
        /// Events per batch body.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Post batches to a server and report throughput and ack latency.
    Send(SendArgs),
    /// Measure how soon an acknowledged event is visible to `/v1/sql`.
    Freshness(FreshnessArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ndjson { events, out, seed } => {
            let mut generator = traffic::Generator::new(seed);
            let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
            let mut bytes = 0usize;
            for i in 0..events {
                let line = serde_json::to_string(&generator.event(&format!("nd-{i}")))?;
                bytes += line.len() + 1;
                writeln!(file, "{line}")?;
            }
            file.flush()?;
            println!(
                "wrote {events} events, {bytes} bytes ({} bytes/event) to {}",
                bytes / events.max(1),
                out.display()
            );
            Ok(())
        }
        Command::Batches {
            events,
            batch,
            out,
            seed,
        } => {
            let mut generator = traffic::Generator::new(seed);
            let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
            let batch = batch.max(1);
            let mut written = 0;
            while written < events {
                let n = batch.min(events - written);
                let body: Vec<_> = (written..written + n)
                    .map(|i| generator.event(&format!("bt-{i}")))
                    .collect();
                serde_json::to_writer(&mut file, &serde_json::json!({ "batch": body }))?;
                writeln!(file)?;
                written += n;
            }
            file.flush()?;
            println!(
                "wrote {events} events in {} batch bodies to {}",
                events.div_ceil(batch),
                out.display()
            );
            Ok(())
        }
        Command::Send(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(send(args)),
        Command::Freshness(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(freshness(args)),
    }
}

#[derive(clap::Args)]
struct SendArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long)]
    write_key: String,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Target events per second over all connections (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Server process id, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// A pre-built batch body with the offsets of its message-id counters.
struct Template {
    body: Vec<u8>,
    counter_offsets: Vec<usize>,
}

const COUNTER_PLACEHOLDER: &str = "################";

fn templates(seed: u64, batch: usize, count: usize) -> Vec<Template> {
    let mut generator = traffic::Generator::new(seed);
    (0..count)
        .map(|t| {
            let events: Vec<_> = (0..batch)
                .map(|i| generator.event(&format!("lg-{t:03}-{COUNTER_PLACEHOLDER}-{i:04}")))
                .collect();
            let body = serde_json::to_vec(&serde_json::json!({"batch": events})).unwrap();
            let counter_offsets = body
                .windows(COUNTER_PLACEHOLDER.len())
                .enumerate()
                .filter(|(_, w)| *w == COUNTER_PLACEHOLDER.as_bytes())
                .map(|(offset, _)| offset)
                .collect();
            Template {
                body,
                counter_offsets,
            }
        })
        .collect()
}

#[derive(Default)]
struct ServerSample {
    cpu_seconds: f64,
    rss_bytes: u64,
    peak_rss_bytes: u64,
}

fn sample_server(pid: u32) -> anyhow::Result<ServerSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let after = &stat[stat.rfind(") ").context("malformed /proc stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ServerSample {
        cpu_seconds: ticks / 100.0,
        rss_bytes: kb("VmRSS:") * 1024,
        peak_rss_bytes: kb("VmHWM:") * 1024,
    })
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let templates = Arc::new(templates(args.seed, args.batch, 64));
    let body_bytes: usize = templates.iter().map(|t| t.body.len()).sum::<usize>() / templates.len();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let endpoint = format!("{}/v1/batch", args.url.trim_end_matches('/'));
    let counter = Arc::new(AtomicU64::new(0));
    let before = args.server_pid.map(sample_server).transpose()?;
    let started = Instant::now();
    let deadline = started + args.duration;
    let per_connection_interval = (args.rate > 0).then(|| {
        Duration::from_secs_f64(args.connections as f64 * args.batch as f64 / args.rate as f64)
    });
    let mut tasks = Vec::new();
    for connection in 0..args.connections {
        let client = client.clone();
        let endpoint = endpoint.clone();
        let key = args.write_key.clone();
        let templates = Arc::clone(&templates);
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
            let mut next_send = Instant::now();
            let mut body = Vec::new();
            while Instant::now() < deadline {
                if let Some(interval) = per_connection_interval {
                    tokio::time::sleep_until(next_send.into()).await;
                    next_send += interval;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let template = &templates[(n as usize + connection) % templates.len()];
                body.clear();
                body.extend_from_slice(&template.body);
                let hex = format!("{n:016x}");
                for &offset in &template.counter_offsets {
                    body[offset..offset + 16].copy_from_slice(hex.as_bytes());
                }
                let sent = Instant::now();
                let result = client
                    .post(&endpoint)
                    .basic_auth(&key, Some(""))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let status = match result {
                    Ok(response) => {
                        let status = response.status().as_u16().to_string();
                        let _ = response.bytes().await;
                        status
                    }
                    Err(err) => format!("error: {}", err.without_url()),
                };
                if status == "200" {
                    latencies.push(sent.elapsed());
                }
                *statuses.entry(status).or_default() += 1;
            }
            (latencies, statuses)
        }));
    }
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let (mut l, s) = task.await?;
        latencies.append(&mut l);
        for (status, count) in s {
            *statuses.entry(status).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = args.server_pid.map(sample_server).transpose()?;
    latencies.sort();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    let accepted_events = latencies.len() as f64 * args.batch as f64;
    println!("duration_s\t{elapsed:.1}");
    println!("batch_size\t{}", args.batch);
    println!("connections\t{}", args.connections);
    println!("accepted_events\t{accepted_events:.0}");
    println!("events_per_s\t{:.0}", accepted_events / elapsed);
    println!(
        "mb_per_s\t{:.1}",
        latencies.len() as f64 * body_bytes as f64 / elapsed / 1e6
    );
    println!("ack_p50_ms\t{:.2}", percentile(0.50));
    println!("ack_p99_ms\t{:.2}", percentile(0.99));
    println!("ack_p999_ms\t{:.2}", percentile(0.999));
    println!("statuses\t{statuses:?}");
    if let (Some(before), Some(after)) = (before, after) {
        let cpu = after.cpu_seconds - before.cpu_seconds;
        println!("server_cpu_s\t{cpu:.2}");
        if accepted_events > 0.0 {
            println!(
                "server_cpu_s_per_million_events\t{:.2}",
                cpu / accepted_events * 1e6
            );
        }
        println!(
            "server_rss_mib_end\t{:.0}",
            after.rss_bytes as f64 / 1048576.0
        );
        println!(
            "server_rss_mib_peak\t{:.0}",
            after.peak_rss_bytes as f64 / 1048576.0
        );
    }
    Ok(())
}

#[derive(clap::Args)]
struct FreshnessArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long)]
    write_key: String,
    #[arg(long)]
    read_token: String,
    /// Events to send, one request each, one after another.
    #[arg(long, default_value_t = 200)]
    probes: usize,
    /// Pause between probes.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pause: Duration,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Sends one event at a time and, as soon as it is acknowledged, asks `/v1/sql` for it until it
/// is there: freshness is the time from the 200 to the first answer that includes the event.
async fn freshness(args: FreshnessArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = args.url.trim_end_matches('/');
    let mut generator = traffic::Generator::new(args.seed);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let mut delays = Vec::with_capacity(args.probes);
    let mut queries = 0usize;
    let mut first_query_hits = 0usize;
    let mut shed = 0usize;
    for probe in 0..args.probes {
        let id = format!("fresh-{run}-{probe}");
        // No client timestamp: the event happens when it is received, so the query below can
        // prune to the newest data by `received_at` however large the table has grown.
        let mut event = generator.event(&id);
        event
            .as_object_mut()
            .expect("an event is an object")
            .remove("timestamp");
        let body = serde_json::json!({ "batch": [event] });
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            .saturating_sub(60);
        // Sent again after a 429/503, after its Retry-After, as an SDK would: freshness is
        // measured from the 200.
        loop {
            let response = client
                .post(format!("{base}/v1/batch"))
                .basic_auth(&args.write_key, Some(""))
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            if status.is_success() {
                break;
            }
            anyhow::ensure!(
                status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::SERVICE_UNAVAILABLE,
                "ingest answered {status}"
            );
            shed += 1;
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.clamp(1, 10))).await;
        }
        let acked = Instant::now();
        let sql = format!(
            "SELECT count(*) AS n FROM events \
             WHERE received_at >= to_timestamp_seconds({since}) AND message_id = '{id}'"
        );
        let mut attempts = 0usize;
        loop {
            attempts += 1;
            let answer = client
                .post(format!("{base}/v1/sql?format=csv"))
                .bearer_auth(&args.read_token)
                .header("content-type", "text/plain")
                .body(sql.clone())
                .send()
                .await?;
            anyhow::ensure!(
                answer.status().is_success(),
                "/v1/sql answered {}",
                answer.status()
            );
            let text = answer.text().await?;
            if text.lines().nth(1).map(str::trim) == Some("1") {
                break;
            }
            anyhow::ensure!(
                acked.elapsed() < Duration::from_secs(30),
                "event {id} not visible 30 s after its acknowledgement"
            );
        }
        delays.push(acked.elapsed());
        queries += attempts;
        first_query_hits += usize::from(attempts == 1);
        tokio::time::sleep(args.pause).await;
    }
    delays.sort();
    let ms = |p: f64| {
        let index = ((delays.len() as f64 * p).ceil() as usize).clamp(1, delays.len()) - 1;
        delays[index].as_secs_f64() * 1000.0
    };
    println!("freshness_probes\t{}", delays.len());
    println!("freshness_p50_ms\t{:.2}", ms(0.50));
    println!("freshness_p99_ms\t{:.2}", ms(0.99));
    println!("freshness_max_ms\t{:.2}", ms(1.0));
    println!(
        "freshness_visible_on_first_query\t{first_query_hits} of {}",
        delays.len()
    );
    println!("freshness_queries\t{queries}");
    println!("freshness_probes_shed_and_resent\t{shed}");
    Ok(())
}
