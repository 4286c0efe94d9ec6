//! Named reports: SQL files in `queries/` whose header declares a title, a description, the
//! definition they implement and typed parameters. Parameters are bound as `$name` placeholders
//! in the plan, never pasted into the SQL text.
//!
//! Header lines (SQL comments at the top of the file):
//!
//! ```text
//! -- title: Top pages
//! -- description: Pages by page views and visitors.
//! -- definition: visitors = distinct visitor ids (see queries/README.md)
//! -- param: from timestamp = -30d : start of the range (inclusive)
//! -- param: limit int = 10 : rows to return
//! ```
//!
//! Parameter types: `timestamp` (RFC 3339, a date `2024-05-01`, `now`, or `-7d`/`-12h`/`-30m`
//! relative to now), `string`, `int` (with optional `min..max` after the type, e.g.
//! `int(1..1000)`), `interval` (`hour`, `day` or `week`), and `list` (comma-separated strings,
//! bound as one string; the SQL splits it with `string_to_array`).

use std::collections::{BTreeMap, HashMap};

use datafusion::common::ParamValues;
use datafusion::scalar::ScalarValue;
use serde::Serialize;

/// The reports shipped in `queries/`, compiled into the binary.
const BUILT_IN: &[(&str, &str)] = &[
    ("overview", include_str!("../../../queries/overview.sql")),
    (
        "timeseries",
        include_str!("../../../queries/timeseries.sql"),
    ),
    ("top_pages", include_str!("../../../queries/top_pages.sql")),
    (
        "entry_pages",
        include_str!("../../../queries/entry_pages.sql"),
    ),
    ("referrers", include_str!("../../../queries/referrers.sql")),
    ("utm", include_str!("../../../queries/utm.sql")),
    ("devices", include_str!("../../../queries/devices.sql")),
    ("events", include_str!("../../../queries/events.sql")),
    (
        "active_users",
        include_str!("../../../queries/active_users.sql"),
    ),
    ("funnel", include_str!("../../../queries/funnel.sql")),
    ("retention", include_str!("../../../queries/retention.sql")),
    ("live", include_str!("../../../queries/live.sql")),
    (
        "properties",
        include_str!("../../../queries/properties.sql"),
    ),
    (
        "events_per_day",
        include_str!("../../../queries/events_per_day.sql"),
    ),
];

/// The longest range a report may cover (two years): bounds what one request can scan.
const MAX_RANGE_MICROS: i64 = 732 * 86_400_000_000;

/// A parameter's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    Timestamp,
    String,
    Int {
        min: i64,
        max: i64,
    },
    Interval,
    /// Comma-separated items, trimmed, `min..=max` of them (or `*` where the report allows all).
    List {
        min: usize,
        max: usize,
    },
}

impl ParamType {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "timestamp" => Ok(ParamType::Timestamp),
            "string" => Ok(ParamType::String),
            "interval" => Ok(ParamType::Interval),
            "list" => Ok(ParamType::List { min: 1, max: 50 }),
            "int" => Ok(ParamType::Int {
                min: i64::MIN,
                max: i64::MAX,
            }),
            other if other.starts_with("list(") => {
                let (min, max) = other
                    .strip_prefix("list(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|range| range.split_once(".."))
                    .ok_or_else(|| format!("unknown parameter type {other:?}"))?;
                Ok(ParamType::List {
                    min: min
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad range in {other:?}"))?,
                    max: max
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad range in {other:?}"))?,
                })
            }
            other => {
                let range = other
                    .strip_prefix("int(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|range| range.split_once(".."))
                    .ok_or_else(|| format!("unknown parameter type {other:?}"))?;
                let min = range
                    .0
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad range in {other:?}"))?;
                let max = range
                    .1
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad range in {other:?}"))?;
                Ok(ParamType::Int { min, max })
            }
        }
    }

    /// The type's name in report headers.
    pub fn name(&self) -> &'static str {
        match self {
            ParamType::Timestamp => "timestamp",
            ParamType::String => "string",
            ParamType::Int { .. } => "int",
            ParamType::Interval => "interval",
            ParamType::List { .. } => "list",
        }
    }
}

/// One declared parameter.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// Used when the caller gives none; `None` makes the parameter required.
    pub default: Option<String>,
    pub description: String,
}

/// One report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub title: String,
    pub description: String,
    pub definition: String,
    pub params: Vec<Param>,
    #[serde(skip)]
    pub sql: String,
}

/// Why a report could not be run with the given parameters (HTTP 400; unknown report 404).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("no report named {0:?}")]
    NotFound(String),
    #[error("parameter {name:?}: {message}")]
    BadParam { name: String, message: String },
}

impl Report {
    /// Parses a report file.
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let mut report = Report {
            name: name.to_owned(),
            title: name.to_owned(),
            description: String::new(),
            definition: String::new(),
            params: Vec::new(),
            sql: text.to_owned(),
        };
        for line in text.lines() {
            let Some(comment) = line.trim().strip_prefix("--") else {
                if line.trim().is_empty() {
                    continue;
                }
                break;
            };
            let Some((key, value)) = comment.trim().split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "title" => report.title = value.to_owned(),
                "description" => report.description = value.to_owned(),
                "definition" => {
                    if !report.definition.is_empty() {
                        report.definition.push(' ');
                    }
                    report.definition.push_str(value);
                }
                "param" => report.params.push(parse_param(value)?),
                _ => {}
            }
        }
        Ok(report)
    }

    /// Binds `given` (raw text values by name) to typed values, filling defaults. Unknown names
    /// are errors, so a typo is not silently ignored. `now_micros` anchors relative times.
    pub fn bind(
        &self,
        given: &HashMap<String, String>,
        now_micros: i64,
    ) -> Result<ParamValues, ReportError> {
        for name in given.keys() {
            if !self.params.iter().any(|p| &p.name == name) {
                return Err(ReportError::BadParam {
                    name: name.clone(),
                    message: format!(
                        "unknown parameter; {} takes {}",
                        self.name,
                        self.params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        let mut values = HashMap::new();
        for param in &self.params {
            let raw = given
                .get(&param.name)
                .or(param.default.as_ref())
                .ok_or_else(|| ReportError::BadParam {
                    name: param.name.clone(),
                    message: "is required".into(),
                })?;
            let value = bind_value(&param.kind, raw, now_micros).map_err(|message| {
                ReportError::BadParam {
                    name: param.name.clone(),
                    message: format!("{message} (expected {})", param.kind.name()),
                }
            })?;
            values.insert(param.name.clone(), value);
        }
        if let (
            Some(ScalarValue::TimestampMicrosecond(Some(from), _)),
            Some(ScalarValue::TimestampMicrosecond(Some(to), _)),
        ) = (values.get("from"), values.get("to"))
        {
            if from >= to {
                return Err(ReportError::BadParam {
                    name: "to".into(),
                    message: "must be after \"from\"".into(),
                });
            }
            if to - from > MAX_RANGE_MICROS {
                return Err(ReportError::BadParam {
                    name: "from".into(),
                    message: "the range may span at most 732 days".into(),
                });
            }
        }
        Ok(ParamValues::Map(
            values
                .into_iter()
                .map(|(name, value)| (name, value.into()))
                .collect(),
        ))
    }
}

fn parse_param(text: &str) -> Result<Param, String> {
    // NAME TYPE [= DEFAULT] [: DESCRIPTION]
    let (spec, description) = match text.split_once(" : ") {
        Some((spec, description)) => (spec, description.trim().to_owned()),
        None => (text, String::new()),
    };
    let (head, default) = match spec.split_once('=') {
        Some((head, default)) => (head, Some(default.trim().to_owned())),
        None => (spec, None),
    };
    let mut words = head.split_whitespace();
    let name = words.next().ok_or("parameter without a name")?.to_owned();
    let kind = ParamType::parse(
        words
            .next()
            .ok_or(format!("parameter {name} has no type"))?,
    )?;
    Ok(Param {
        name,
        kind,
        default,
        description,
    })
}

fn bind_value(kind: &ParamType, raw: &str, now_micros: i64) -> Result<ScalarValue, String> {
    let raw = raw.trim();
    match kind {
        ParamType::Timestamp => Ok(ScalarValue::TimestampMicrosecond(
            Some(parse_time(raw, now_micros)?),
            Some("UTC".into()),
        )),
        ParamType::String => {
            if raw.len() > 4096 {
                return Err("is longer than 4096 bytes".into());
            }
            Ok(ScalarValue::Utf8(Some(raw.to_owned())))
        }
        ParamType::List { min, max } => {
            if raw.len() > 4096 {
                return Err("is longer than 4096 bytes".into());
            }
            if raw == "*" {
                return Ok(ScalarValue::Utf8(Some(raw.to_owned())));
            }
            let items: Vec<&str> = raw.split(',').map(str::trim).collect();
            if items.iter().any(|item| item.is_empty()) {
                return Err("has an empty item".into());
            }
            if items.len() < *min || items.len() > *max {
                return Err(format!(
                    "has {} items; between {min} and {max} are allowed",
                    items.len()
                ));
            }
            Ok(ScalarValue::Utf8(Some(items.join(","))))
        }
        ParamType::Int { min, max } => {
            let value: i64 = raw
                .parse()
                .map_err(|_| format!("{raw:?} is not a whole number"))?;
            if value < *min || value > *max {
                return Err(format!("{value} is outside {min}..{max}"));
            }
            Ok(ScalarValue::Int64(Some(value)))
        }
        ParamType::Interval => match raw {
            "hour" | "day" | "week" => Ok(ScalarValue::Utf8(Some(raw.to_owned()))),
            other => Err(format!("{other:?} is not hour, day or week")),
        },
    }
}

/// `now`, `-7d`/`-12h`/`-30m`, a date (`2024-05-01`, midnight UTC) or an RFC 3339 time.
pub fn parse_time(text: &str, now_micros: i64) -> Result<i64, String> {
    if text == "now" {
        return Ok(now_micros);
    }
    if let Some(relative) = text.strip_prefix('-') {
        let unit_start = relative.char_indices().last().map_or(0, |(index, _)| index);
        let (number, unit) = relative.split_at(unit_start);
        let amount: i64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a time"))?;
        let unit_micros: i64 = match unit {
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            "w" => 7 * 86_400_000_000,
            _ => return Err(format!("{text:?} is not a time")),
        };
        return amount
            .checked_mul(unit_micros)
            .and_then(|delta| now_micros.checked_sub(delta))
            .ok_or_else(|| format!("{text:?} is out of range"));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_micros());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_micros())
        .map_err(|_| {
            format!("{text:?} is not a time (use 2024-05-01, 2024-05-01T12:00:00Z, now or -7d)")
        })
}

/// The reports a server offers.
#[derive(Debug, Clone)]
pub struct Reports {
    by_name: BTreeMap<String, Report>,
}

impl Reports {
    /// The reports compiled into the binary.
    pub fn built_in() -> Self {
        let by_name = BUILT_IN
            .iter()
            .map(|(name, text)| {
                let report = Report::parse(name, text)
                    .unwrap_or_else(|err| panic!("queries/{name}.sql: {err}"));
                ((*name).to_owned(), report)
            })
            .collect();
        Self { by_name }
    }

    pub fn get(&self, name: &str) -> Result<&Report, ReportError> {
        self.by_name
            .get(name)
            .ok_or_else(|| ReportError::NotFound(name.to_owned()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Report> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_report_parses_with_a_title_and_range() {
        let reports = Reports::built_in();
        for report in reports.iter() {
            assert!(
                !report.title.is_empty() && report.title != report.name,
                "{}",
                report.name
            );
            assert!(!report.description.is_empty(), "{}", report.name);
            let bound = report.bind(&HashMap::new(), 1_700_000_000_000_000);
            assert!(bound.is_ok(), "{}: {bound:?}", report.name);
        }
        assert!(matches!(reports.get("nope"), Err(ReportError::NotFound(_))));
    }

    #[test]
    fn binds_typed_values_and_names_bad_parameters() {
        let report = Report::parse(
            "r",
            "-- title: R\n-- param: from timestamp = -7d : start\n-- param: to timestamp = now\n\
             -- param: limit int(1..100) = 10\n-- param: interval interval = day\nSELECT 1",
        )
        .unwrap();
        let now = 1_700_000_000_000_000;
        let given = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let ParamValues::Map(values) = report.bind(&given(&[("limit", "5")]), now).unwrap() else {
            panic!("named parameters");
        };
        assert_eq!(values["limit"].value, ScalarValue::Int64(Some(5)));
        assert_eq!(
            values["from"].value,
            ScalarValue::TimestampMicrosecond(Some(now - 7 * 86_400_000_000), Some("UTC".into()))
        );
        for (pairs, name) in [
            (vec![("limit", "1000")], "limit"),
            (vec![("limit", "x")], "limit"),
            (vec![("interval", "year")], "interval"),
            (vec![("from", "yesterday")], "from"),
            (vec![("from", "2024-05-02"), ("to", "2024-05-01")], "to"),
            (vec![("colour", "red")], "colour"),
            (vec![("from", "-5é")], "from"),
            (vec![("from", "1970-01-01")], "from"),
        ] {
            match report.bind(&given(&pairs), now) {
                Err(ReportError::BadParam { name: bad, .. }) => assert_eq!(bad, name, "{pairs:?}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
        assert_eq!(parse_time("2024-05-01", 0), Ok(1_714_521_600_000_000));
        assert_eq!(
            parse_time("2024-05-01T00:00:01+00:00", 0),
            Ok(1_714_521_601_000_000)
        );
    }

    /// Every built-in report plans and runs over a small fixture (buffered rows only), and a
    /// few numbers are checked by hand.
    #[tokio::test]
    async fn every_report_runs() {
        use crate::{EventsView, QueryConfig, QueryEngine, StaticSource};
        use logektor_event::{Endpoint, RequestMeta, decode, to_record_batch};

        let body = serde_json::json!({"batch": [
            {"type": "page", "anonymousId": "a1", "timestamp": "2024-05-01T10:00:00Z",
             "properties": {"url": "https://shop.example/?utm_source=news", "referrer": "https://www.google.com/x"}},
            {"type": "page", "anonymousId": "a1", "timestamp": "2024-05-01T10:10:00Z",
             "properties": {"url": "https://shop.example/pricing"}},
            {"type": "track", "anonymousId": "a1", "userId": "u1", "event": "Signed Up",
             "timestamp": "2024-05-01T10:12:00Z", "properties": {"plan": "pro"}},
            {"type": "track", "userId": "u1", "event": "Activated", "timestamp": "2024-05-02T09:00:00Z"},
            {"type": "page", "anonymousId": "a2", "timestamp": "2024-05-01T11:00:00Z",
             "properties": {"url": "https://shop.example/pricing"}},
            {"type": "track", "anonymousId": "a2", "event": "Signed Up", "timestamp": "2024-05-01T11:01:00Z"},
            {"type": "page", "anonymousId": "a3", "timestamp": "2024-05-08T11:00:00Z",
             "properties": {"url": "https://shop.example/"}}
        ]});
        let meta = RequestMeta::new(1_715_000_000_000_000, "web", 1);
        let events = decode(&meta, Endpoint::Batch, body.to_string().as_bytes()).unwrap();
        let view = EventsView {
            table: Default::default(),
            buffered: vec![to_record_batch(&events)],
        };
        let engine = QueryEngine::new(
            QueryConfig::default(),
            std::sync::Arc::new(StaticSource(view)),
        )
        .unwrap();
        let range: HashMap<String, String> = [("from", "2024-05-01"), ("to", "2024-05-15")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let reports = Reports::built_in();
        let mut outputs = HashMap::new();
        for report in reports.iter() {
            let mut given = range.clone();
            if report.name == "live" {
                given.clear();
            }
            if report.name == "properties" {
                given.insert("event".into(), "Signed Up".into());
            }
            if report.name == "funnel" {
                given.insert("steps".into(), "Signed Up,Activated".into());
            }
            let params = report.bind(&given, 1_716_000_000_000_000).unwrap();
            let batches = engine
                .execute_with_params(&report.sql, Some(params))
                .await
                .unwrap_or_else(|err| panic!("{}: {err}", report.name))
                .collect()
                .await
                .unwrap_or_else(|err| panic!("{}: {err}", report.name));
            let text = arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            outputs.insert(report.name.clone(), text);
        }
        // a1 became u1 mid-session: three visitors, not four.
        let overview = &outputs["overview"];
        assert!(overview.contains("| 3        |"), "{overview}");
        let funnel = &outputs["funnel"];
        assert!(
            funnel.contains("| 1    | Signed Up | 2        |"),
            "{funnel}"
        );
        assert!(
            funnel.contains("| 2    | Activated | 1        | 0.5        |"),
            "{funnel}"
        );
        let referrers = &outputs["referrers"];
        assert!(referrers.contains("google.com"), "{referrers}");
        assert!(
            outputs["properties"].contains("pro"),
            "{}",
            outputs["properties"]
        );
    }
}
