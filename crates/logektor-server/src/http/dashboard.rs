//! The web dashboard at `GET /`: the named reports of one source and date range, drawn
//! server-side (HTML from `maud`, charts as SVG from `plotters`), so it needs no JavaScript
//! build and no set-up beyond cargo. A sign-in form keeps the read token in an HttpOnly,
//! SameSite=Strict cookie; the only script refreshes the live-visitors count.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logektor_query::Scope;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::{Map, Value, json};

use super::ingest::now_micros;
use super::{ApiError, AppState};

const COOKIE: &str = "lgk_token";
const DAY: i64 = 86_400_000_000;

type Row = Map<String, Value>;

fn token_from_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// What the signed-in token may read; `None` when not signed in.
fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<Scope> {
    token_from_cookie(headers).and_then(|token| state.keys.read_scope(&token))
}

/// Largest sign-in form body.
const MAX_SIGN_IN_BODY: usize = 4096;

/// `POST /login`: checks the read token and keeps it in a cookie.
pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // Read like every other body: capped and with the body timeout, so a stalled sign-in
    // cannot hold a connection (axum's Form extractor has neither).
    let form = match super::ingest::read_body(body, MAX_SIGN_IN_BODY, state.body_timeout).await {
        Ok(form) => form,
        Err(error) => return error.into_response(),
    };
    let token = url::form_urlencoded::parse(&form)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    let token = token.as_str();
    if !state.keys.is_read_token(token) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::response::Html(sign_in_page(Some("That read token is not valid.")).into_string()),
        )
            .into_response();
    }
    // Behind a trusted TLS-terminating proxy the cookie never travels over plain HTTP.
    let https = state.sources.is_trusted_proxy(peer.ip())
        && headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes() == b"https");
    let secure = if https { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000{secure}");
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /logout`: forgets the cookie.
pub(super) async fn logout() -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("lgk_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}

/// The range and filters of a dashboard page.
#[derive(Debug, Clone)]
struct Range {
    source: String,
    from: String,
    to: String,
    interval: &'static str,
}

impl Range {
    fn from_query(query: &HashMap<String, String>, now: i64) -> Result<Self, String> {
        let date = |micros: i64| {
            chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default()
        };
        let to = query
            .get("to")
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| date(now + DAY));
        let from = query
            .get("from")
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| date(now - 29 * DAY));
        let parse = |text: &str| logektor_query::reports::parse_time(text, now);
        let span = parse(&to)?
            .checked_sub(parse(&from)?)
            .ok_or("the range is too long")?;
        if span <= 0 {
            return Err("the end of the range must be after its start".into());
        }
        let interval = match query.get("interval").map(String::as_str) {
            Some("hour") => "hour",
            Some("day") => "day",
            Some("week") => "week",
            _ if span <= 2 * DAY => "hour",
            _ if span <= 92 * DAY => "day",
            _ => "week",
        };
        Ok(Self {
            source: query
                .get("source")
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| "*".into()),
            from,
            to,
            interval,
        })
    }

    fn params(&self) -> HashMap<String, String> {
        [
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("source", self.source.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Runs one report and returns its rows, or the error text for the panel.
async fn run(
    state: &AppState,
    scope: &Scope,
    name: &str,
    mut params: HashMap<String, String>,
) -> Result<Vec<Row>, String> {
    let report = state.reports.get(name).map_err(|e| e.to_string())?;
    let known: Vec<&str> = report.params.iter().map(|p| p.name.as_str()).collect();
    params.retain(|key, _| known.contains(&key.as_str()));
    let bound = report
        .bind(&params, now_micros())
        .map_err(|e| e.to_string())?;
    let engine = Arc::clone(&state.engine);
    let sql = report.sql.clone();
    let scope = scope.clone();
    let rows = state
        .compute
        .spawn(async move {
            let stream = engine.execute_in_scope(&sql, Some(bound), &scope).await?;
            let schema = stream.schema();
            let batches = stream.collect().await?;
            logektor_query::format::encode_all(logektor_query::Format::Json, &schema, &batches)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    serde_json::from_slice::<Vec<Row>>(&rows).map_err(|e| e.to_string())
}

/// `GET /`: the dashboard, or the sign-in form.
pub(super) async fn page(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(scope) = signed_in(&state, &headers) else {
        return axum::response::Html(sign_in_page(None).into_string()).into_response();
    };
    let range = match Range::from_query(&query, now_micros()) {
        Ok(range) => range,
        Err(message) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::response::Html(error_page(&message).into_string()),
            )
                .into_response();
        }
    };
    let sources: Vec<String> = {
        let mut sources: Vec<String> = state
            .keys
            .sources()
            .filter(|source| scope.allows(source))
            .map(str::to_owned)
            .collect();
        sources.sort();
        sources.dedup();
        sources
    };
    if range.source != "*" && !sources.contains(&range.source) {
        return (
            StatusCode::BAD_REQUEST,
            axum::response::Html(error_page("unknown source").into_string()),
        )
            .into_response();
    }
    let base = range.params();
    let with = |extra: &[(&str, &str)]| {
        let mut params = base.clone();
        for (k, v) in extra {
            params.insert((*k).to_owned(), (*v).to_owned());
        }
        params
    };
    let steps = query.get("steps").filter(|s| !s.trim().is_empty()).cloned();
    let funnel_params = match &steps {
        Some(steps) => with(&[("steps", steps.as_str())]),
        None => base.clone(),
    };
    // The panels' reports run concurrently on the compute runtime.
    let (overview, timeseries, top_pages, entry_pages, referrers, utm) = futures::join!(
        run(&state, &scope, "overview", base.clone()),
        run(
            &state,
            &scope,
            "timeseries",
            with(&[("interval", range.interval)])
        ),
        run(&state, &scope, "top_pages", base.clone()),
        run(&state, &scope, "entry_pages", base.clone()),
        run(&state, &scope, "referrers", base.clone()),
        run(&state, &scope, "utm", base.clone()),
    );
    let (devices, events, funnel, retention, live) = futures::join!(
        run(&state, &scope, "devices", with(&[("limit", "5")])),
        run(
            &state,
            &scope,
            "events",
            with(&[("interval", "week"), ("limit", "20")])
        ),
        run(&state, &scope, "funnel", funnel_params),
        run(&state, &scope, "retention", base.clone()),
        run(&state, &scope, "live", with(&[])),
    );
    let panels = Panels {
        overview,
        timeseries,
        top_pages,
        entry_pages,
        referrers,
        utm,
        devices,
        events,
        funnel,
        retention,
        live,
    };
    let markup = dashboard_page(&range, &sources, steps.as_deref(), &panels);
    let mut response = axum::response::Html(markup.into_string()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /dashboard/live?source=..`: the live count, for the page's refresh (cookie auth).
pub(super) async fn live(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Some(scope) = signed_in(&state, &headers) else {
        return Err(ApiError::unauthorized("sign in first"));
    };
    let mut params = HashMap::new();
    params.insert(
        "source".to_owned(),
        query.get("source").cloned().unwrap_or_else(|| "*".into()),
    );
    let rows = run(&state, &scope, "live", params)
        .await
        .map_err(|e| ApiError::bad_request("invalid_request", e))?;
    Ok(Json(
        rows.into_iter().next().map_or(json!({}), Value::Object),
    ))
}

struct Panels {
    overview: Result<Vec<Row>, String>,
    timeseries: Result<Vec<Row>, String>,
    top_pages: Result<Vec<Row>, String>,
    entry_pages: Result<Vec<Row>, String>,
    referrers: Result<Vec<Row>, String>,
    utm: Result<Vec<Row>, String>,
    devices: Result<Vec<Row>, String>,
    events: Result<Vec<Row>, String>,
    funnel: Result<Vec<Row>, String>,
    retention: Result<Vec<Row>, String>,
    live: Result<Vec<Row>, String>,
}

const STYLE: &str = r#"
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb; --bg: #f9fafb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .75rem; align-items: center; justify-content: space-between; padding: .9rem 1.25rem; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { font-size: 1.15rem; margin: 0; }
form.filters { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; }
form.filters label { display: flex; flex-direction: column; font-size: .75rem; color: var(--muted); }
input, select, button { font: inherit; padding: .35rem .5rem; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
main { padding: 1rem 1.25rem 2rem; display: grid; gap: 1rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 1rem; min-width: 0; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: .95rem; margin: 0 0 .6rem; }
.numbers { display: grid; gap: .75rem; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); }
.number { padding: .4rem .2rem; }
.number .value { font-size: 1.6rem; font-weight: 600; }
.number .label { color: var(--muted); font-size: .8rem; }
.up { color: #15803d; } .down { color: #b91c1c; } .flat { color: var(--muted); }
table { width: 100%; border-collapse: collapse; font-size: .88rem; }
th, td { text-align: left; padding: .3rem .4rem; border-bottom: 1px solid var(--line); }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.bar { position: relative; }
td.bar span.fill { position: absolute; left: 0; top: 15%; bottom: 15%; background: #dbeafe; border-radius: 3px; z-index: 0; }
td.bar span.text { position: relative; z-index: 1; word-break: break-all; }
.chart svg { width: 100%; height: auto; display: block; }
.error { color: #b91c1c; }
.live { font-weight: 600; color: #15803d; }
.grid td { text-align: center; }
.scroll { overflow-x: auto; }
"#;

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                link rel="icon" href="data:,";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

fn sign_in_page(error: Option<&str>) -> Markup {
    layout(
        "Logektor — sign in",
        html! {
            main {
                section {
                    h2 { "Sign in to Logektor" }
                    p { "Paste a read token (printed on first start and kept in data/keys.json)." }
                    @if let Some(error) = error { p.error { (error) } }
                    form method="post" action="/login" {
                        input type="password" name="token" placeholder="rt_…" autocomplete="current-password" required;
                        " "
                        button type="submit" { "Sign in" }
                    }
                }
            }
        },
    )
}

fn error_page(message: &str) -> Markup {
    layout(
        "Logektor",
        html! { main { section { p.error { (message) } a href="/" { "Back" } } } },
    )
}

fn number(row: &Row, key: &str) -> f64 {
    row.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text(row: &Row, key: &str) -> String {
    match row.get(key) {
        // Report timestamps read as dates (or date and minute) on the page.
        Some(Value::String(s)) if matches!(key, "bucket" | "day" | "cohort") => {
            match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(time) if time.format("%H:%M:%S").to_string() == "00:00:00" => {
                    time.format("%Y-%m-%d").to_string()
                }
                Ok(time) => time.format("%Y-%m-%d %H:%M").to_string(),
                Err(_) => s.clone(),
            }
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "—".into(),
        Some(other) => other.to_string(),
    }
}

fn change(current: f64, previous: f64, lower_is_better: bool) -> Markup {
    if previous == 0.0 {
        return html! { span.flat { "new" } };
    }
    let pct = (current - previous) / previous * 100.0;
    let good = if lower_is_better {
        pct < 0.0
    } else {
        pct > 0.0
    };
    let class = if pct.abs() < 0.05 {
        "flat"
    } else if good {
        "up"
    } else {
        "down"
    };
    html! { span class=(class) { (format!("{pct:+.1}%")) " vs previous" } }
}

fn panel_error(error: &str) -> Markup {
    html! { p.error { "This report failed: " (error) } }
}

fn headline(overview: &Result<Vec<Row>, String>) -> Markup {
    let rows = match overview {
        Ok(rows) => rows,
        Err(e) => return panel_error(e),
    };
    let Some(row) = rows.first() else {
        return html! { p { "No data." } };
    };
    let minutes = |s: f64| format!("{}m {:02}s", (s / 60.0) as i64, (s % 60.0) as i64);
    let items: [(&str, &str, String, bool); 5] = [
        (
            "visitors",
            "Visitors",
            format!("{}", number(row, "visitors")),
            false,
        ),
        (
            "pageviews",
            "Page views",
            format!("{}", number(row, "pageviews")),
            false,
        ),
        (
            "sessions",
            "Sessions",
            format!("{}", number(row, "sessions")),
            false,
        ),
        (
            "bounce_rate",
            "Bounce rate",
            format!("{:.1}%", number(row, "bounce_rate") * 100.0),
            true,
        ),
        (
            "avg_session_seconds",
            "Session duration",
            minutes(number(row, "avg_session_seconds")),
            false,
        ),
    ];
    html! {
        div.numbers {
            @for (key, label, value, lower) in items {
                div.number data-metric=(key) {
                    div.value { (value) }
                    div.label { (label) " · " (change(number(row, key), number(row, &format!("{key}_previous")), lower)) }
                }
            }
        }
    }
}

/// A table of rows with the first column drawn over a bar proportional to `bar_key`.
fn bar_table(rows: &Result<Vec<Row>, String>, columns: &[(&str, &str)], bar_key: &str) -> Markup {
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return panel_error(e),
    };
    if rows.is_empty() {
        return html! { p { "No data for this range." } };
    }
    let max = rows
        .iter()
        .map(|r| number(r, bar_key))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let (first_key, first_label) = columns[0];
    html! {
        div.scroll { table {
            thead { tr {
                th { (first_label) }
                @for (_, label) in &columns[1..] { th.n { (label) } }
            } }
            tbody {
                @for row in rows {
                    tr {
                        td.bar {
                            span.fill style=(format!("width: {:.1}%", number(row, bar_key) / max * 100.0)) {}
                            span.text { (text(row, first_key)) }
                        }
                        @for (key, _) in &columns[1..] { td.n { (text(row, key)) } }
                    }
                }
            }
        } }
    }
}

/// Visitors and page views over time, as an SVG line chart.
fn timeseries_chart(rows: &Result<Vec<Row>, String>, interval: &str) -> Markup {
    use plotters::prelude::*;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return panel_error(e),
    };
    if rows.is_empty() {
        return html! { p { "No data for this range." } };
    }
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let bucket = text(r, "bucket");
            if interval == "hour" {
                bucket.chars().skip(5).collect()
            } else {
                bucket
            }
        })
        .collect();
    let visitors: Vec<f64> = rows.iter().map(|r| number(r, "visitors")).collect();
    let pageviews: Vec<f64> = rows.iter().map(|r| number(r, "pageviews")).collect();
    let top = pageviews
        .iter()
        .chain(&visitors)
        .fold(1.0_f64, |a, b| a.max(*b))
        * 1.1;
    let n = rows.len();
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (900, 280)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .margin_right(40)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..(n.max(2) - 1) as f64, 0f64..top)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(240, 240, 240))
            .x_labels(n.min(8))
            .x_label_formatter(&|x| labels.get(x.round() as usize).cloned().unwrap_or_default())
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        let blue = RGBColor(37, 99, 235);
        let orange = RGBColor(234, 88, 12);
        chart
            .draw_series(LineSeries::new(
                pageviews.iter().enumerate().map(|(i, v)| (i as f64, *v)),
                orange.stroke_width(2),
            ))?
            .label("Page views")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], orange.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(
                visitors.iter().enumerate().map(|(i, v)| (i as f64, *v)),
                blue.stroke_width(2),
            ))?
            .label("Visitors")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], blue.stroke_width(2))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(RGBColor(229, 231, 235))
            .draw()?;
        root.present()?;
        Ok(())
    })();
    if let Err(err) = drawn {
        return panel_error(&err.to_string());
    }
    html! { div.chart { (PreEscaped(responsive(&svg))) } }
}

/// The funnel's visitors per step, as an SVG bar chart, with the conversion table under it.
fn funnel_chart(rows: &Result<Vec<Row>, String>) -> Markup {
    use plotters::prelude::*;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return panel_error(e),
    };
    if rows.is_empty() {
        return html! { p { "No data for this range." } };
    }
    let names: Vec<String> = rows.iter().map(|r| text(r, "event")).collect();
    let values: Vec<u32> = rows.iter().map(|r| number(r, "visitors") as u32).collect();
    let top = values.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.15;
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (600, 240)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d((0u32..values.len() as u32).into_segmented(), 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(RGBColor(240, 240, 240))
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(RGBColor(37, 99, 235).filled())
                .margin(18)
                .data(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as u32, *v as f64)),
                ),
        )?;
        root.present()?;
        Ok(())
    })();
    if let Err(err) = drawn {
        return panel_error(&err.to_string());
    }
    html! {
        div.chart { (PreEscaped(responsive(&svg))) }
        div.scroll { table {
            thead { tr { th { "Step" } th.n { "Visitors" } th.n { "Conversion" } th.n { "From step before" } } }
            tbody {
                @for row in rows {
                    tr {
                        td { (text(row, "step")) ". " (text(row, "event")) }
                        td.n { (text(row, "visitors")) }
                        td.n { (format!("{:.1}%", number(row, "conversion") * 100.0)) }
                        td.n { (format!("{:.1}%", number(row, "step_conversion") * 100.0)) }
                    }
                }
            }
        } }
    }
}

/// One retention row: the cohort's week, its size, and (week number, share) cells.
type Cohort = (String, f64, Vec<(i64, f64)>);

/// Weekly cohorts as a grid shaded by the share returning.
fn retention_grid(rows: &Result<Vec<Row>, String>) -> Markup {
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return panel_error(e),
    };
    if rows.is_empty() {
        return html! { p { "No data for this range." } };
    }
    let mut cohorts: Vec<Cohort> = Vec::new();
    for row in rows {
        let cohort = text(row, "cohort")
            .get(0..10)
            .unwrap_or_default()
            .to_owned();
        if cohorts.last().is_none_or(|c| c.0 != cohort) {
            cohorts.push((cohort, number(row, "cohort_size"), Vec::new()));
        }
        let week = number(row, "week_number") as i64;
        cohorts
            .last_mut()
            .expect("pushed above")
            .2
            .push((week, number(row, "share")));
    }
    let weeks = rows
        .iter()
        .map(|r| number(r, "week_number") as i64)
        .max()
        .unwrap_or(0);
    html! {
        div.scroll {
            table.grid {
                thead { tr {
                    th { "Cohort" } th.n { "Visitors" }
                    @for week in 0..=weeks { th { "W" (week) } }
                } }
                tbody {
                    @for (cohort, size, shares) in &cohorts {
                        tr {
                            td { (cohort) }
                            td.n { (size) }
                            @for week in 0..=weeks {
                                @let share = shares.iter().find(|(w, _)| *w == week).map(|(_, s)| *s);
                                @match share {
                                    Some(share) => td style=(format!("background: rgba(37, 99, 235, {:.2}); color: {}", share * 0.85 + 0.05, if share > 0.5 { "#fff" } else { "inherit" })) {
                                        (format!("{:.0}%", share * 100.0))
                                    },
                                    None => td {},
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// plotters writes fixed width and height; let the SVG scale with its box.
fn responsive(svg: &str) -> String {
    let Some(start) = svg.find("<svg") else {
        return svg.to_owned();
    };
    let end = svg[start..].find('>').map_or(svg.len(), |e| start + e);
    let head = &svg[start..end];
    let attribute = |name: &str| {
        let key = format!("{name}=\"");
        head.find(&key).and_then(|i| {
            let rest = &head[i + key.len()..];
            rest.find('"').map(|j| rest[..j].to_owned())
        })
    };
    match (attribute("width"), attribute("height")) {
        (Some(width), Some(height)) => {
            let new_head = head
                .replacen(&format!("width=\"{width}\""), "", 1)
                .replacen(
                    &format!("height=\"{height}\""),
                    &format!("viewBox=\"0 0 {width} {height}\" preserveAspectRatio=\"xMidYMid meet\" role=\"img\""),
                    1,
                );
            format!("{}{}{}", &svg[..start], new_head, &svg[end..])
        }
        _ => svg.to_owned(),
    }
}

fn dashboard_page(
    range: &Range,
    sources: &[String],
    steps: Option<&str>,
    panels: &Panels,
) -> Markup {
    let live = match &panels.live {
        Ok(rows) => rows.first().map_or(0.0, |r| number(r, "visitors")),
        Err(_) => 0.0,
    };
    let mut live_script = String::new();
    let _ = write!(
        live_script,
        "setInterval(function () {{ fetch('/dashboard/live?source=' + encodeURIComponent({source}), {{credentials: 'same-origin'}})\
         .then(function (r) {{ return r.ok ? r.json() : null; }})\
         .then(function (d) {{ if (d && d.visitors !== undefined) document.getElementById('live').textContent = d.visitors; }})\
         .catch(function () {{}}); }}, 10000);",
        // Only known sources get here; escaping `<` keeps the string inert inside <script>.
        source = serde_json::to_string(&range.source)
            .unwrap_or_else(|_| "\"*\"".into())
            .replace('<', "\\u003c")
    );
    layout(
        "Logektor",
        html! {
            header {
                h1 { "Logektor" }
                form.filters method="get" action="/" {
                    label { "Source"
                        select name="source" {
                            option value="*" selected[range.source == "*"] { "All sources" }
                            @for source in sources {
                                option value=(source) selected[&range.source == source] { (source) }
                            }
                        }
                    }
                    label { "From" input type="date" name="from" value=(range.from); }
                    label { "To (exclusive)" input type="date" name="to" value=(range.to); }
                    label { "Interval"
                        select name="interval" {
                            @for option in ["hour", "day", "week"] {
                                option value=(option) selected[range.interval == option] { (option) }
                            }
                        }
                    }
                    label { "Funnel steps"
                        input type="text" name="steps" placeholder="Signed Up,Activated,Purchased" value=(steps.unwrap_or(""));
                    }
                    button type="submit" { "Apply" }
                }
                div { span.live { span id="live" { (live) } " live" } " · visitors in the last 5 minutes" }
            }
            main {
                section.wide { h2 { "Overview" } (headline(&panels.overview)) }
                section.wide { h2 { "Visitors and page views" } (timeseries_chart(&panels.timeseries, range.interval)) }
                section { h2 { "Top pages" } (bar_table(&panels.top_pages, &[("page_path", "Page"), ("visitors", "Visitors"), ("pageviews", "Views")], "pageviews")) }
                section { h2 { "Entry pages" } (bar_table(&panels.entry_pages, &[("entry_page", "Page"), ("sessions", "Sessions"), ("visitors", "Visitors")], "sessions")) }
                section { h2 { "Referrers" } (bar_table(&panels.referrers, &[("referrer", "Referrer"), ("sessions", "Sessions"), ("visitors", "Visitors")], "sessions")) }
                section { h2 { "Campaigns (UTM)" } (bar_table(&panels.utm, &[("utm_source", "Source"), ("utm_medium", "Medium"), ("utm_campaign", "Campaign"), ("visitors", "Visitors")], "visitors")) }
                section { h2 { "Devices" } (bar_table(&panels.devices, &[("value", "Browser / OS / device"), ("dimension", "Kind"), ("visitors", "Visitors")], "visitors")) }
                section { h2 { "Events per week" } (bar_table(&panels.events, &[("event", "Event"), ("bucket", "Week"), ("events", "Events"), ("visitors", "Visitors")], "events")) }
                section { h2 { "Funnel" } (funnel_chart(&panels.funnel)) }
                section { h2 { "Retention (weekly cohorts)" } (retention_grid(&panels.retention)) }
            }
            script { (PreEscaped(live_script)) }
            form method="post" action="/logout" style="padding: 0 1.25rem 1rem" { button type="submit" { "Sign out" } }
        },
    )
}
