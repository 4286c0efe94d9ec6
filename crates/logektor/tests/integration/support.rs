//! `TestServer`: starts the binary, finds its port, stops it gracefully or with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const WRITE_KEY: &str = "test-write-key";
pub const READ_TOKEN: &str = "test-read-token";
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// This crate's folder, read at run time (cargo sets it for the test process) rather than
/// compiled in: a test binary that cargo reuses from a build of another checkout sharing the
/// target folder would otherwise read that checkout's files.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    )
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_logektor")
}

pub struct TestServer {
    child: Option<Child>,
    pub base: String,
    client: reqwest::blocking::Client,
}

impl TestServer {
    /// Starts a server on `data_dir`; `extra` adds flags (e.g. `--flush-interval`).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        match Self::try_start(data_dir, extra) {
            Ok(server) => server,
            Err(status) => panic!("server exited before listening: {status}"),
        }
    }

    /// Like [`TestServer::start`], but a server that exits before it listens (a crash point
    /// armed during replay) gives its exit status instead of a panic.
    pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Self, std::process::ExitStatus> {
        Self::try_start_with_env(data_dir, extra, &[])
    }

    /// Like [`TestServer::try_start`], with extra environment variables.
    pub fn try_start_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, std::process::ExitStatus> {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--write-key", &format!("default={WRITE_KEY}")])
            .args(["--write-key", "mobile=mobile-key"])
            .args(["--read-token", READ_TOKEN])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(extra)
            .env("LOGEKTOR_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start logektor");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(address) = line.strip_prefix("Logektor listening on ") {
                        break address.trim().to_owned();
                    }
                }
                _ => return Err(child.wait().expect("wait for logektor")),
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let server = Self {
            child: Some(child),
            base,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let health = server.client.get(server.url("/health")).send().unwrap();
        assert_eq!(health.status(), 200);
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The server's resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Waits up to `limit` for the server to exit by itself (a crash point); `None` if it is
    /// still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// POSTs JSON to a Segment endpoint with HTTP Basic auth.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .basic_auth(WRITE_KEY, Some(""))
            .json(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// Calls an admin endpoint with the admin token; returns the status and the JSON answer.
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = self.url(path);
        let request = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url),
        }
        .bearer_auth(ADMIN_TOKEN);
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// An admin call that must succeed; returns its JSON answer.
    pub fn admin_ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, answer) = self.admin(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer
    }

    /// Runs SQL; returns the status and the raw body.
    pub fn sql_raw(&self, sql: &str, format: &str) -> (u16, Vec<u8>) {
        let response = self
            .client
            .post(self.url("/v1/sql"))
            .bearer_auth(READ_TOKEN)
            .json(&json!({"sql": sql, "format": format}))
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.bytes().unwrap().to_vec(),
        )
    }

    /// Runs SQL and returns the rows as JSON objects (panics on error).
    pub fn sql(&self, sql: &str) -> Vec<Value> {
        let (status, body) = self.sql_raw(sql, "json");
        assert_eq!(status, 200, "{sql}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Vec<Value>>(&body).unwrap()
    }

    /// A single number from `SELECT <expr> AS n ...`.
    pub fn count(&self, sql: &str) -> i64 {
        self.sql(sql)[0]["n"].as_i64().unwrap()
    }

    /// SIGTERM and wait: the graceful path (drain, flush, exit 0).
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = wait_with_timeout(&mut child, Duration::from_secs(60));
        assert!(
            exit.success(),
            "graceful shutdown should exit 0, got {exit:?}"
        );
    }

    /// SIGKILL: no flush, no cleanup. A server that already exited (a crash point) is fine.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().unwrap();
        }
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Number of commits in the table's Delta log (version 0 is the table's creation).
pub fn delta_commits(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("events/_delta_log"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the table has more than `commits` commits.
pub fn wait_for_commit_after(data_dir: &Path, commits: usize) {
    let started = Instant::now();
    while delta_commits(data_dir) <= commits {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no flush within 30s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` track events with message ids `{prefix}-{i}`.
pub fn track_events(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "type": "track",
                "event": format!("Event {}", i % 5),
                "userId": format!("user-{}", i % 17),
                "messageId": format!("{prefix}-{i}"),
                "timestamp": "2024-05-01T12:00:00.000Z",
                "properties": {"index": i, "prefix": prefix},
            })
        })
        .collect()
}

/// Posts `events` as batches of `per_batch`, asserting each 200.
pub fn send_batches(server: &TestServer, events: &[Value], per_batch: usize) {
    for chunk in events.chunks(per_batch) {
        let (status, body) = server.post("/v1/batch", &json!({"batch": chunk}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"success": true}));
    }
}

/// Reads the table under `data_dir` with Python's `deltalake` (an independent implementation)
/// and returns "rows distinct_message_ids partition_columns".
pub fn python_delta_counts(data_dir: &Path) -> String {
    let script = r#"
import os, sys
from deltalake import DeltaTable
table = DeltaTable(sys.argv[1])
data = table.to_pyarrow_table()
print(data.num_rows, len(set(data.column("message_id").to_pylist())), sorted(table.metadata().partition_columns))
# deltalake 1.6 with pyarrow 26 aborts in about half of all interpreter shutdowns ("terminate
# called without an active exception"), after the work is done; skip the teardown.
sys.stdout.flush()
os._exit(0)
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(data_dir.join("events"))
        .output()
        .expect("python3 must be installed (scripts/test.sh installs deltalake and pyarrow)");
    assert!(
        output.status.success(),
        "python deltalake failed (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Every Parquet data file under a table folder, recursively (not the log's checkpoints).
pub fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("_delta_log") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out
}

/// Runs `logektor ARGS... --data-dir DIR` (no server), asserts it succeeded, returns stdout.
pub fn cli(args: &[&str], data_dir: &Path) -> String {
    let output = Command::new(binary())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("LOGEKTOR_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `logektor sql --format FORMAT` on a data folder (no server) and returns its output.
pub fn offline(data_dir: &Path, format: &str, sql: &str) -> String {
    cli(&["sql", "--format", format, sql], data_dir)
}
