//! Golden tests of the named reports: a deterministic fixture (generated here, not stored) sent
//! through the Segment API; each report's answer compared with `tests/golden/reports/NAME.json`
//! (rewrite them with `LOGEKTOR_UPDATE_GOLDEN=1`); `overview`, `top_pages`, `funnel` and
//! `retention` cross-checked against plain Rust over the fixture; the same answers whether the
//! events are still buffered or already flushed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::{READ_TOKEN, TestServer, send_batches};

const DAY: i64 = 86_400_000_000;
const MINUTE: i64 = 60_000_000;
/// 2024-04-01T00:00:00Z, a Monday.
const START: i64 = 1_711_929_600_000_000;
const FROM: &str = "2024-04-01";
const TO: &str = "2024-05-06";
const STEPS: [&str; 3] = ["Signed Up", "Activated", "Purchased"];

/// One generated event, with what the independent computation needs.
#[derive(Clone, Debug)]
pub(crate) struct Fx {
    kind: &'static str,
    event: Option<String>,
    anonymous_id: Option<String>,
    user_id: Option<String>,
    ts: i64,
    path: Option<String>,
    referrer: Option<String>,
    utm: bool,
    agent: usize,
    plan: usize,
}

const PATHS: [&str; 5] = ["/", "/pricing", "/docs", "/blog/a", "/blog/b"];
const REFERRERS: [&str; 5] = [
    "https://www.google.com/search",
    "https://news.ycombinator.com/",
    "",
    "https://shop.example/",
    "https://t.co/x",
];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
];
const PLANS: [&str; 3] = ["free", "pro", "team"];

fn page(anon: Option<&str>, user: Option<&str>, ts: i64, path: &str) -> Fx {
    Fx {
        kind: "page",
        event: None,
        anonymous_id: anon.map(str::to_owned),
        user_id: user.map(str::to_owned),
        ts,
        path: Some(path.to_owned()),
        referrer: None,
        utm: false,
        agent: 0,
        plan: 0,
    }
}

fn track(anon: Option<&str>, user: Option<&str>, ts: i64, name: &str) -> Fx {
    Fx {
        kind: "track",
        event: Some(name.to_owned()),
        path: None,
        ..page(anon, user, ts, "/")
    }
}

/// The fixture: 60 visitors over five weeks, plus the edge cases, plus a few events in the
/// previous range.
pub(crate) fn fixture() -> Vec<Fx> {
    let mut out = Vec::new();
    for i in 0..60usize {
        let anon = format!("anon-{i:02}");
        let user = format!("user-{i:02}");
        let identifies = i % 5 == 0;
        let first_day = (i * 7 % 28) as i64;
        let sessions = 1 + i % 4;
        for k in 0..sessions {
            let start =
                START + (first_day + 5 * k as i64) * DAY + (8 + (i % 10) as i64) * 60 * MINUTE;
            let pages = 1 + (i + k) % 4;
            for j in 0..pages {
                let identified = identifies && (k > 0 || j > 0);
                let (a, u) = if identified {
                    (None, Some(user.as_str()))
                } else {
                    (Some(anon.as_str()), None)
                };
                let mut event = page(
                    a,
                    u,
                    start + 3 * MINUTE * j as i64,
                    PATHS[(i * 3 + k * 7 + j) % 5],
                );
                event.agent = i % 4;
                if j == 0 {
                    event.referrer = Some(REFERRERS[(i + k) % 5].to_owned());
                    event.utm = i % 6 == 0;
                }
                out.push(event);
                if identifies && k == 0 && j == 0 {
                    out.push(Fx {
                        kind: "identify",
                        ..page(Some(&anon), Some(&user), start + MINUTE, "/")
                    });
                }
            }
            if k == 0 {
                let (a, u) = if identifies {
                    (None, Some(user.as_str()))
                } else {
                    (Some(anon.as_str()), None)
                };
                let t = start + 2 * MINUTE;
                let mut steps = Vec::new();
                if i % 10 == 5 {
                    // Out of order: Activated before Signed Up does not count for step 2.
                    steps.push((t, "Activated"));
                    steps.push((t + MINUTE, "Signed Up"));
                } else if i % 2 == 0 {
                    steps.push((t, "Signed Up"));
                    if i % 4 == 0 {
                        steps.push((t + DAY, "Activated"));
                    }
                    if i % 8 == 0 {
                        steps.push((t + 2 * DAY, "Purchased"));
                    }
                    if i % 12 == 0 {
                        // Too late: outside the 7-day window.
                        steps.push((t + 9 * DAY, "Activated"));
                    }
                }
                for (ts, name) in steps {
                    let mut event = track(a, u, ts, name);
                    event.plan = i % 3;
                    event.agent = i % 4;
                    out.push(event);
                }
            }
        }
    }
    // The previous range of equal length (35 days before FROM).
    for i in 0..5 {
        out.push(page(
            Some(&format!("prev-{i}")),
            None,
            START - 20 * DAY + i * 60 * MINUTE,
            PATHS[i as usize],
        ));
    }
    out
}

/// The session and bounce edge cases, sent as source `mobile` so a report can be asked about
/// them alone.
fn edge_cases() -> Vec<Fx> {
    vec![
        // A gap of exactly 30 minutes starts a new session.
        page(
            Some("edge-gap"),
            None,
            START + 10 * DAY + 9 * 60 * MINUTE,
            "/",
        ),
        page(
            Some("edge-gap"),
            None,
            START + 10 * DAY + 9 * 60 * MINUTE + 30 * MINUTE,
            "/docs",
        ),
        // A session crossing midnight is one session.
        page(
            Some("edge-night"),
            None,
            START + 12 * DAY - 10 * MINUTE,
            "/",
        ),
        page(
            Some("edge-night"),
            None,
            START + 12 * DAY + 10 * MINUTE,
            "/pricing",
        ),
        // Identified mid-session: anonymous first, then the user id only.
        page(Some("edge-anon"), None, START + 14 * DAY, "/"),
        Fx {
            kind: "identify",
            ..page(
                Some("edge-anon"),
                Some("edge-user"),
                START + 14 * DAY + MINUTE,
                "/",
            )
        },
        page(
            None,
            Some("edge-user"),
            START + 14 * DAY + 5 * MINUTE,
            "/docs",
        ),
    ]
}

fn iso(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

pub(crate) fn to_segment(events: &[Fx]) -> Vec<Value> {
    events
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let mut message = json!({
                "type": e.kind,
                "messageId": format!("fx-{n:05}"),
                "timestamp": iso(e.ts),
                "context": {"userAgent": AGENTS[e.agent]},
            });
            if let Some(id) = &e.anonymous_id {
                message["anonymousId"] = json!(id);
            }
            if let Some(id) = &e.user_id {
                message["userId"] = json!(id);
            }
            match e.kind {
                "page" => {
                    let query = if e.utm {
                        "?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
                    } else {
                        ""
                    };
                    let mut properties = json!({
                        "url": format!("https://shop.example{}{query}", e.path.as_deref().unwrap()),
                    });
                    if let Some(referrer) = e.referrer.as_ref().filter(|r| !r.is_empty()) {
                        properties["referrer"] = json!(referrer);
                    }
                    message["properties"] = properties;
                }
                "track" => {
                    message["event"] = json!(e.event);
                    message["properties"] = json!({"plan": PLANS[e.plan]});
                }
                _ => {}
            }
            message
        })
        .collect()
}

/// The report calls compared with golden files: (file name, report, extra query).
fn cases() -> Vec<(&'static str, &'static str, String)> {
    let range = format!("from={FROM}&to={TO}");
    vec![
        ("overview", "overview", range.clone()),
        (
            "timeseries_week",
            "timeseries",
            format!("{range}&interval=week"),
        ),
        ("top_pages", "top_pages", range.clone()),
        ("entry_pages", "entry_pages", range.clone()),
        ("referrers", "referrers", range.clone()),
        ("utm", "utm", range.clone()),
        ("devices", "devices", range.clone()),
        ("events_week", "events", format!("{range}&interval=week")),
        (
            "active_users",
            "active_users",
            "from=2024-04-08&to=2024-04-15".to_owned(),
        ),
        (
            "funnel",
            "funnel",
            format!("{range}&steps=Signed%20Up,Activated,Purchased&window_days=7"),
        ),
        ("retention", "retention", range.clone()),
        (
            "properties",
            "properties",
            format!("{range}&event=Signed%20Up&property=plan"),
        ),
        (
            "events_per_day",
            "events_per_day",
            "from=2024-04-01&to=2024-04-04".to_owned(),
        ),
    ]
}

fn run_report(server: &TestServer, report: &str, query: &str) -> Value {
    let response = server
        .client()
        .get(server.url(&format!("/v1/reports/{report}?{query}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().unwrap();
    assert_eq!(status, 200, "{report}?{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn golden_dir() -> PathBuf {
    crate::support::manifest_dir().join("tests/golden/reports")
}

fn all_answers(server: &TestServer) -> BTreeMap<&'static str, Value> {
    cases()
        .into_iter()
        .map(|(file, report, query)| (file, run_report(server, report, &query)))
        .collect()
}

#[test]
fn reports_match_golden_files_and_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    // A long flush interval keeps everything buffered for the first round.
    let server = TestServer::start(dir.path(), &["--flush-interval", "1h"]);
    let mut events = fixture();
    send_batches(&server, &to_segment(&events), 100);
    let edges = edge_cases();
    let mut edge_messages = to_segment(&edges);
    for message in &mut edge_messages {
        let id = message["messageId"]
            .as_str()
            .unwrap()
            .replace("fx-", "edge-");
        message["messageId"] = json!(id);
    }
    let response = server
        .client()
        .post(server.url("/v1/batch"))
        .basic_auth("mobile-key", Some(""))
        .json(&json!({"batch": edge_messages}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    events.extend(edges);
    let buffered = all_answers(&server);

    // Golden files.
    let update = std::env::var_os("LOGEKTOR_UPDATE_GOLDEN").is_some();
    std::fs::create_dir_all(golden_dir()).unwrap();
    for (file, answer) in &buffered {
        let path = golden_dir().join(format!("{file}.json"));
        let text = serde_json::to_string_pretty(answer).unwrap() + "\n";
        if update {
            std::fs::write(&path, text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run with LOGEKTOR_UPDATE_GOLDEN=1",
                path.display()
            )
        });
        assert_eq!(
            answer,
            &serde_json::from_str::<Value>(&expected).unwrap(),
            "{file} differs from {}",
            path.display()
        );
    }

    // The edge cases alone: a gap of exactly 30 minutes makes two one-page sessions (both
    // bounces), a session across midnight is one (20 minutes), and the visitor identified
    // mid-session is one visitor with one session (5 minutes).
    let alone = run_report(
        &server,
        "overview",
        &format!("from={FROM}&to={TO}&source=mobile"),
    );
    assert_eq!(
        alone[0],
        json!({"visitors": 3, "visitors_previous": 0, "pageviews": 6, "pageviews_previous": 0,
               "sessions": 4, "sessions_previous": 0, "bounce_rate": 0.5,
               "bounce_rate_previous": 0.0, "avg_session_seconds": 375.0,
               "avg_session_seconds_previous": 0.0})
    );

    // A session running at the start of the range belongs to the range before: the midnight
    // session (23:50 to 00:10) has no entry page on the 13th, and one on the 12th.
    let entries = |from: &str, to: &str| {
        run_report(
            &server,
            "entry_pages",
            &format!("from={from}&to={to}&source=mobile"),
        )
    };
    assert_eq!(entries("2024-04-13", "2024-04-14"), json!([]));
    assert_eq!(
        entries("2024-04-12", "2024-04-13"),
        json!([{"entry_page": "/", "sessions": 1, "visitors": 1}])
    );

    // Independent computation over the fixture.
    let model = Model::new(&events, START, START + 35 * DAY);
    let overview = &buffered["overview"][0];
    let (visitors, pageviews, sessions, bounces, seconds) = model.overview();
    assert_eq!(overview["visitors"], json!(visitors), "{overview}");
    assert_eq!(overview["pageviews"], json!(pageviews), "{overview}");
    assert_eq!(overview["sessions"], json!(sessions), "{overview}");
    let rate = (bounces as f64 / sessions as f64 * 10_000.0).round() / 10_000.0;
    assert_eq!(
        overview["bounce_rate"].as_f64().unwrap(),
        rate,
        "{overview}"
    );
    let average = (seconds / sessions as f64 * 10.0).round() / 10.0;
    assert_eq!(overview["avg_session_seconds"].as_f64().unwrap(), average);
    let previous = Model::new(&events, START - 35 * DAY, START);
    assert_eq!(overview["visitors_previous"], json!(previous.overview().0));

    let top: Vec<(String, usize, usize)> = buffered["top_pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["page_path"].as_str().unwrap().to_owned(),
                r["pageviews"].as_u64().unwrap() as usize,
                r["visitors"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(top, model.top_pages());

    let funnel: Vec<usize> = buffered["funnel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["visitors"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(funnel, model.funnel(7 * DAY));

    let retention: Vec<(i64, i64, usize)> = buffered["retention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let cohort = chrono::DateTime::parse_from_rfc3339(r["cohort"].as_str().unwrap())
                .unwrap()
                .timestamp_micros();
            (
                cohort,
                r["week_number"].as_i64().unwrap(),
                r["visitors"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(retention, model.retention());

    // Active users on 2024-04-08 (the report's first day), with identities linked over the 29
    // days before it too.
    let day = START + 7 * DAY;
    let window = Model::new(&events, day - 29 * DAY, START + 14 * DAY);
    let first = &buffered["active_users"][0];
    assert_eq!(first["day"], "2024-04-08T00:00:00Z");
    let active = |from: i64| {
        window
            .activity
            .iter()
            .filter(|a| a.1 >= from && a.1 < day + DAY)
            .map(|a| a.0.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    };
    assert_eq!(
        (
            first["dau"].as_u64(),
            first["wau"].as_u64(),
            first["mau"].as_u64()
        ),
        (
            Some(active(day) as u64),
            Some(active(day - 6 * DAY) as u64),
            Some(active(day - 29 * DAY) as u64)
        ),
        "{first}"
    );

    // Flushed: the same answers from the table, planned for four partitions (the first round
    // had as many as the machine has cores) and with DataFusion's own broadcast thresholds at
    // zero: on a table this small it would broadcast every join by size, which on ten million
    // events it cannot (no size for an aggregate), so joins are planned as they are there.
    server.stop();
    let server = TestServer::try_start_with_env(
        dir.path(),
        &["--flush-interval", "1h", "--compute-threads", "4"],
        &[
            (
                "DATAFUSION_OPTIMIZER_HASH_JOIN_SINGLE_PARTITION_THRESHOLD",
                "0",
            ),
            (
                "DATAFUSION_OPTIMIZER_HASH_JOIN_SINGLE_PARTITION_THRESHOLD_ROWS",
                "0",
            ),
        ],
    )
    .expect("the server starts");
    let count = server.count("SELECT count(*) AS n FROM events");
    assert_eq!(count as usize, events.len());
    let flushed = all_answers(&server);
    assert_eq!(flushed, buffered);
    // The reports' visitor join is a broadcast join (`logektor-query::broadcast_join`).
    let plans = server.sql(
        "EXPLAIN WITH identified AS (SELECT anonymous_id, min(user_id) AS known_user \
         FROM events WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY anonymous_id) \
         SELECT count(DISTINCT coalesce(s.user_id, i.known_user, s.anonymous_id)) AS visitors \
         FROM identified i RIGHT JOIN events s ON s.anonymous_id = i.anonymous_id",
    );
    let physical = plans
        .iter()
        .find(|row| row["plan_type"] == "physical_plan")
        .and_then(|row| row["plan"].as_str())
        .expect("EXPLAIN gives a physical plan");
    assert!(
        physical.contains("HashJoinExec: mode=CollectLeft, join_type=Right"),
        "{physical}"
    );
}

/// The report definitions of queries/README.md, written again in plain Rust.
struct Model {
    /// (visitor, ts, kind, path, event name) of the range, sorted by visitor then time.
    activity: Vec<Activity>,
}

/// (visitor, ts, kind, path, event name)
type Activity = (String, i64, &'static str, Option<String>, Option<String>);

impl Model {
    fn new(events: &[Fx], from: i64, to: i64) -> Self {
        let in_range: Vec<&Fx> = events
            .iter()
            .filter(|e| e.ts >= from && e.ts < to)
            .collect();
        let mut known: HashMap<&str, &str> = HashMap::new();
        for e in &in_range {
            if let (Some(a), Some(u)) = (&e.anonymous_id, &e.user_id) {
                let entry = known.entry(a.as_str()).or_insert(u.as_str());
                if u.as_str() < *entry {
                    *entry = u.as_str();
                }
            }
        }
        let mut activity: Vec<_> = in_range
            .iter()
            .filter(|e| e.kind != "identify")
            .map(|e| {
                let visitor = e
                    .user_id
                    .as_deref()
                    .or_else(|| {
                        e.anonymous_id
                            .as_deref()
                            .and_then(|a| known.get(a).copied())
                    })
                    .or(e.anonymous_id.as_deref())
                    .unwrap()
                    .to_owned();
                (visitor, e.ts, e.kind, e.path.clone(), e.event.clone())
            })
            .collect();
        activity.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Self { activity }
    }

    /// Sessions as lists of activity indices.
    fn sessions(&self) -> Vec<Vec<usize>> {
        let mut out: Vec<Vec<usize>> = Vec::new();
        for (index, (visitor, ts, ..)) in self.activity.iter().enumerate() {
            let continues = index > 0 && {
                let (previous_visitor, previous_ts, ..) = &self.activity[index - 1];
                previous_visitor == visitor && ts - previous_ts < 30 * MINUTE
            };
            if continues {
                out.last_mut().unwrap().push(index);
            } else {
                out.push(vec![index]);
            }
        }
        out
    }

    /// (visitors, pageviews, sessions, bounced sessions, total session seconds)
    fn overview(&self) -> (usize, usize, usize, usize, f64) {
        let visitors: BTreeSet<&str> = self.activity.iter().map(|a| a.0.as_str()).collect();
        let pageviews = self.activity.iter().filter(|a| a.2 == "page").count();
        let sessions = self.sessions();
        let bounces = sessions
            .iter()
            .filter(|s| s.len() == 1 && self.activity[s[0]].2 == "page")
            .count();
        let seconds: f64 = sessions
            .iter()
            .map(|s| (self.activity[*s.last().unwrap()].1 - self.activity[s[0]].1) as f64 / 1e6)
            .sum();
        (visitors.len(), pageviews, sessions.len(), bounces, seconds)
    }

    /// (path, pageviews, visitors), most viewed first, then by path; the top 10.
    fn top_pages(&self) -> Vec<(String, usize, usize)> {
        let mut by_path: BTreeMap<String, (usize, BTreeSet<&str>)> = BTreeMap::new();
        for (visitor, _, kind, path, _) in &self.activity {
            if *kind == "page" {
                let entry = by_path.entry(path.clone().unwrap()).or_default();
                entry.0 += 1;
                entry.1.insert(visitor);
            }
        }
        let mut rows: Vec<_> = by_path
            .into_iter()
            .map(|(path, (views, visitors))| (path, views, visitors.len()))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        rows.truncate(10);
        rows
    }

    /// Visitors reaching each step in order within `window` of step 1.
    fn funnel(&self, window: i64) -> Vec<usize> {
        let mut by_visitor: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
        for (visitor, ts, kind, _, event) in &self.activity {
            if *kind == "track" {
                by_visitor
                    .entry(visitor)
                    .or_default()
                    .push((*ts, event.as_deref().unwrap()));
            }
        }
        let mut reached = vec![0; STEPS.len()];
        for hits in by_visitor.values() {
            let Some(start) = hits.iter().filter(|h| h.1 == STEPS[0]).map(|h| h.0).min() else {
                continue;
            };
            reached[0] += 1;
            let mut last = start;
            for (step, name) in STEPS.iter().enumerate().skip(1) {
                match hits
                    .iter()
                    .filter(|h| h.1 == *name && h.0 >= last && h.0 < start + window)
                    .map(|h| h.0)
                    .min()
                {
                    Some(t) => {
                        reached[step] += 1;
                        last = t;
                    }
                    None => break,
                }
            }
        }
        reached
    }

    /// (cohort week start, week number, visitors), sorted.
    fn retention(&self) -> Vec<(i64, i64, usize)> {
        let week_of = |ts: i64| {
            // Weeks start on Monday; the epoch was a Thursday.
            let days = ts.div_euclid(DAY);
            (days - (days + 3).rem_euclid(7)) * DAY
        };
        let mut weeks: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
        for (visitor, ts, ..) in &self.activity {
            weeks.entry(visitor).or_default().insert(week_of(*ts));
        }
        let mut counts: BTreeMap<(i64, i64), usize> = BTreeMap::new();
        for active in weeks.values() {
            let cohort = *active.iter().next().unwrap();
            for week in active {
                *counts
                    .entry((cohort, (week - cohort) / (7 * DAY)))
                    .or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|((cohort, n), visitors)| (cohort, n, visitors))
            .collect()
    }
}

#[test]
fn dashboard_renders_and_follows_the_date_range_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]);
    send_batches(&server, &to_segment(&fixture()), 100);
    // Without the cookie, the page is the sign-in form; a wrong token is refused.
    let page = server
        .client()
        .get(server.url("/"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("name=\"token\""), "{page}");
    let refused = server
        .client()
        .post(server.url("/login"))
        .form(&[("token", "wrong")])
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    // The live count the page refreshes itself from, with the sign-in cookie.
    let signed_in = server
        .client()
        .post(server.url("/login"))
        .form(&[("token", READ_TOKEN)])
        .send()
        .unwrap();
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned());
    // reqwest follows the redirect; the cookie is on the first answer, so ask without following.
    let cookie = cookie.unwrap_or_else(|| {
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let answer = client
            .post(server.url("/login"))
            .form(&[("token", READ_TOKEN)])
            .send()
            .unwrap();
        assert_eq!(answer.status().as_u16(), 303);
        let header = answer.headers()["set-cookie"].to_str().unwrap();
        assert!(header.contains("HttpOnly") && header.contains("SameSite=Strict"));
        header.split(';').next().unwrap().to_owned()
    });
    let live: Value = server
        .client()
        .get(server.url("/dashboard/live?source=*"))
        .header("cookie", &cookie)
        .send()
        .unwrap()
        .json()
        .unwrap();
    // Everything was received just now: 60 visitors, 5 of the previous range, and the 12 anonymous
    // ids of identified visitors (live counts raw ids, without merging identities).
    assert_eq!(live["visitors"], 77, "{live}");
    assert_eq!(
        server
            .client()
            .get(server.url("/dashboard/live"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out).unwrap();
    let output = std::process::Command::new("node")
        .arg(crate::support::manifest_dir().join("tests/clients/dashboard.mjs"))
        .args([server.base.as_str(), READ_TOKEN])
        .arg(&out)
        .output()
        .expect("node must be installed (scripts/test.sh)");
    assert!(
        output.status.success(),
        "dashboard.mjs: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(
        output
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    // The five weeks have 60 visitors (the golden overview less the edge cases); the second
    // week alone fewer.
    assert_eq!(result["before"], "60", "{result}");
    assert_ne!(result["after"], result["before"], "{result}");
    for name in ["dashboard-laptop.png", "dashboard-phone.png"] {
        let size = std::fs::metadata(out.join(name)).unwrap().len();
        assert!(size > 10_000, "{name} is {size} bytes");
    }
}
