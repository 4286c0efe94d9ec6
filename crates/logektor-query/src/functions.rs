//! SQL functions the query engine registers over DataFusion's own.
//!
//! [`UtcDateTrunc`] replaces `date_trunc` with the same function plus a fast path for the
//! common case of the reports: `hour`, `day` or `week` of a timestamp array in UTC (or without
//! a time zone). DataFusion 55 truncates a timestamp that carries a time zone, even `UTC`, by
//! converting every value to a calendar date and back (~90 ns per row, measured: 0.9 s of CPU
//! per ten million events, most of the cost of `SELECT max(date_trunc('day', timestamp))`);
//! in UTC an hour, a day and a week have fixed lengths, so truncation is one remainder per value.
//! Everything else (other units, other time zones, scalars, times) goes to DataFusion's
//! function unchanged, and a differential test holds the two to the same answers.
//!
//! [`ConstantListPosition`] replaces `array_position` with the same function plus a fast path
//! for a constant list searched for each row's value, as the funnel report does
//! (`array_position(string_to_array($steps, ','), event)`). DataFusion 55 repeats the constant
//! list once per row and compares each row's value with its own copy (a slice, a comparison
//! kernel and a bitmap per row: about a tenth of the funnel's CPU); with the list constant, one
//! comparison of the whole column per list element gives every row's first match. Lists longer
//! than [`MAX_CONSTANT_LIST`], a start position, or anything else go to DataFusion's function.
//!
//! [`UrlHost`] is a function of our own, `url_host(url)`: the host part of a URL as the
//! `referrers` report compares it with the referrer's host, exactly what
//! `regexp_replace(regexp_replace(lower(coalesce(url, '')), '^[a-z]+://([^@/]*@)?(www\.)?',
//! ''), '[/:?#].*$', '')` answers (a differential test holds it to that expression). The two
//! regular expressions took 1.75 s of CPU over the 3.6 million session entries of 10M events,
//! a sixth of the report.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, PrimitiveArray, Scalar, StringArray, StringBuilder, UInt64Array,
};
use arrow::compute::kernels::cmp::not_distinct;
use arrow::datatypes::{
    ArrowTimestampType, DataType, FieldRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::functions::datetime::date_trunc::DateTruncFunc;
use datafusion::functions_nested::position::ArrayPosition;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

/// Registers this module's functions on `ctx`, replacing DataFusion's of the same names.
pub(crate) fn register(ctx: &datafusion::prelude::SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc::default()));
    ctx.register_udf(ScalarUDF::new_from_impl(ConstantListPosition::default()));
    ctx.register_udf(ScalarUDF::new_from_impl(UrlHost::default()));
}

/// `date_trunc`, with a fast path for `hour`, `day` and `week` in UTC (see the module docs).
///
/// It wraps DataFusion's function and delegates every method that function implements, so the
/// signature, coercions, result type, ordering properties and documentation are DataFusion's.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct UtcDateTrunc {
    inner: DateTruncFunc,
}

/// The `ScalarUDFImpl` methods a wrapper passes on to DataFusion's function in `self.inner`:
/// the signature, coercions, result type, aliases and documentation stay DataFusion's.
macro_rules! delegate_to_inner {
    () => {
        fn name(&self) -> &str {
            self.inner.name()
        }

        fn signature(&self) -> &Signature {
            self.inner.signature()
        }

        fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
            self.inner.return_type(arg_types)
        }

        fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
            self.inner.return_field_from_args(args)
        }

        fn aliases(&self) -> &[String] {
            self.inner.aliases()
        }

        fn documentation(&self) -> Option<&Documentation> {
            self.inner.documentation()
        }
    };
}

impl ScalarUDFImpl for UtcDateTrunc {
    delegate_to_inner!();

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(truncated) = utc_fast_path(&args.args) {
            return Ok(ColumnarValue::Array(truncated));
        }
        self.inner.invoke_with_args(args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }
}

/// Fixed-length units of `date_trunc` in UTC.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Hour,
    Day,
    /// Weeks start on Monday, as DataFusion's (and ISO 8601's) do.
    Week,
}

impl Unit {
    fn parse(granularity: &ColumnarValue) -> Option<Self> {
        let ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)),
        ) = granularity
        else {
            return None;
        };
        match text.to_ascii_lowercase().as_str() {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            _ => None,
        }
    }

    /// `(length, offset)` in ticks of `unit`: a value `v` truncates to
    /// `v - (v - offset).rem_euclid(length)`.
    fn ticks(self, unit: TimeUnit) -> (i64, i64) {
        let per_second = match unit {
            TimeUnit::Second => 1,
            TimeUnit::Millisecond => 1_000,
            TimeUnit::Microsecond => 1_000_000,
            TimeUnit::Nanosecond => 1_000_000_000,
        };
        let day = 86_400 * per_second;
        match self {
            Self::Hour => (3_600 * per_second, 0),
            Self::Day => (day, 0),
            // 1970-01-05, the first Monday after the epoch (a Thursday).
            Self::Week => (7 * day, 4 * day),
        }
    }
}

/// No time zone, or UTC under a name Arrow parses. Anything else, including spellings Arrow
/// may refuse, goes to DataFusion's function, so an invalid zone fails as it would there.
fn is_utc(tz: Option<&str>) -> bool {
    matches!(tz, None | Some("UTC" | "+00:00" | "Etc/UTC"))
}

/// The truncated array, or `None` to leave the call to DataFusion's function (a unit or time
/// zone this path does not cover, a scalar, or a value whose truncation overflows).
fn utc_fast_path(args: &[ColumnarValue]) -> Option<ArrayRef> {
    let [granularity, ColumnarValue::Array(values)] = args else {
        return None;
    };
    let unit = Unit::parse(granularity)?;
    let DataType::Timestamp(time_unit, tz) = values.data_type() else {
        return None;
    };
    if !is_utc(tz.as_deref()) {
        return None;
    }
    let (length, offset) = unit.ticks(*time_unit);
    match time_unit {
        TimeUnit::Second => truncate::<TimestampSecondType>(values, length, offset),
        TimeUnit::Millisecond => truncate::<TimestampMillisecondType>(values, length, offset),
        TimeUnit::Microsecond => truncate::<TimestampMicrosecondType>(values, length, offset),
        TimeUnit::Nanosecond => truncate::<TimestampNanosecondType>(values, length, offset),
    }
}

fn truncate<T: ArrowTimestampType>(
    values: &ArrayRef,
    length: i64,
    offset: i64,
) -> Option<ArrayRef> {
    let values = values.as_any().downcast_ref::<PrimitiveArray<T>>()?;
    let overflow = || ArrowError::ComputeError("timestamp out of range".into());
    let truncated: PrimitiveArray<T> = values
        .try_unary(|v| {
            let since = v.checked_sub(offset).ok_or_else(overflow)?;
            v.checked_sub(since.rem_euclid(length)).ok_or_else(overflow)
        })
        .ok()?;
    Some(Arc::new(truncated.with_timezone_opt(values.timezone())))
}

/// `array_position`, with a fast path for a constant list (see the module docs). Like
/// [`UtcDateTrunc`], it delegates everything else to DataFusion's function.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct ConstantListPosition {
    inner: ArrayPosition,
}

/// The longest constant list [`ConstantListPosition`] searches itself: one pass over the
/// column per element.
pub const MAX_CONSTANT_LIST: usize = 64;

impl ScalarUDFImpl for ConstantListPosition {
    delegate_to_inner!();

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(positions) = constant_list_position(&args.args)? {
            return Ok(ColumnarValue::Array(positions));
        }
        self.inner.invoke_with_args(args)
    }
}

/// Each row's 1-based position of its value in the constant list (NULL matches NULL, as
/// DataFusion compares), NULL where absent; `None` to leave the call to DataFusion's function.
fn constant_list_position(args: &[ColumnarValue]) -> Result<Option<ArrayRef>> {
    let [ColumnarValue::Scalar(list), ColumnarValue::Array(values)] = args else {
        return Ok(None);
    };
    let elements = match list {
        ScalarValue::List(list) if list.len() == 1 && list.is_valid(0) => list.value(0),
        ScalarValue::LargeList(list) if list.len() == 1 && list.is_valid(0) => list.value(0),
        _ => return Ok(None),
    };
    let searchable = elements.data_type() == values.data_type()
        && !values.data_type().is_nested()
        && elements.len() <= MAX_CONSTANT_LIST;
    if !searchable {
        return Ok(None);
    }
    let mut positions = vec![0u64; values.len()];
    // Last element first, so the first match is what stays.
    for index in (0..elements.len()).rev() {
        let element = Scalar::new(elements.slice(index, 1));
        let equal = not_distinct(values, &element)?;
        for row in equal.values().set_indices() {
            positions[row] = index as u64 + 1;
        }
    }
    #[cfg(test)]
    tests::FAST_CALLS.with(|calls| calls.set(calls.get() + 1));
    let found = positions.iter().map(|&p| p != 0).collect();
    Ok(Some(Arc::new(UInt64Array::new(
        positions.into(),
        Some(found),
    ))))
}

/// `url_host(url)`: see the [module docs](self).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UrlHost {
    signature: Signature,
}

impl Default for UrlHost {
    fn default() -> Self {
        Self {
            signature: Signature::string(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for UrlHost {
    fn name(&self) -> &str {
        "url_host"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("url_host takes one argument");
        };
        let scalar = matches!(value, ColumnarValue::Scalar(_));
        let urls = value.to_array(if scalar { 1 } else { args.number_rows })?;
        let hosts = match urls.data_type() {
            DataType::Utf8View => url_hosts(urls.as_string_view().iter()),
            DataType::Utf8 => url_hosts(urls.as_string::<i32>().iter()),
            DataType::LargeUtf8 => url_hosts(urls.as_string::<i64>().iter()),
            DataType::Null => url_hosts(std::iter::repeat_n(None, urls.len())),
            other => return exec_err!("url_host takes text, not {other}"),
        };
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &hosts, 0,
            )?));
        }
        Ok(ColumnarValue::Array(Arc::new(hosts)))
    }
}

fn url_hosts<'a>(urls: impl Iterator<Item = Option<&'a str>>) -> StringArray {
    let mut hosts = StringBuilder::new();
    let mut lowered = String::new();
    for url in urls {
        lowered.clear();
        let url = url.unwrap_or("");
        if url.is_ascii() {
            lowered.push_str(url);
            lowered.make_ascii_lowercase();
        } else {
            // As SQL's `lower`.
            lowered.push_str(&url.to_lowercase());
        }
        hosts.append_value(url_host(&lowered));
    }
    hosts.finish()
}

/// The host of a lowercased URL: without `scheme://` (letters `a`–`z`), the user info up to an
/// `@` before any `/`, and `www.`; up to the first `/`, `:`, `?` or `#` after the text's last
/// newline (the second expression's `.*$` cannot cross a newline).
fn url_host(url: &str) -> &str {
    let bytes = url.as_bytes();
    let mut start = 0;
    let scheme = bytes.iter().take_while(|b| b.is_ascii_lowercase()).count();
    if scheme > 0 && bytes[scheme..].starts_with(b"://") {
        start = scheme + 3;
        let user = bytes[start..].iter().position(|&b| b == b'@' || b == b'/');
        if let Some(at) = user.filter(|&at| bytes[start + at] == b'@') {
            start += at + 1;
        }
        if bytes[start..].starts_with(b"www.") {
            start += 4;
        }
    }
    let rest = &url[start..];
    let line = rest.rfind('\n').map_or(0, |at| at + 1);
    let end = rest[line..]
        .find(['/', ':', '?', '#'])
        .map_or(rest.len(), |at| line + at);
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Calls [`constant_list_position`] answered on this thread.
        pub(super) static FAST_CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    use arrow::array::{RecordBatch, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::prelude::SessionContext;

    /// A deterministic spread of microsecond timestamps from 1900 to 2200, with nulls, exact
    /// unit boundaries and values either side of them.
    fn timestamps() -> Vec<Option<i64>> {
        const DAY: i64 = 86_400_000_000;
        let mut values = vec![
            None,
            Some(0),
            Some(-1),
            Some(1),
            Some(4 * DAY),
            Some(4 * DAY - 1),
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // -70 to +230 years around the epoch.
            let span = 300 * 365 * DAY;
            let value = (state % span as u64) as i64 - 70 * 365 * DAY;
            values.push(Some(value));
            values.push(Some(value - value.rem_euclid(DAY)));
            values.push(Some(value - value.rem_euclid(3_600_000_000) - 1));
        }
        values
    }

    async fn answers(fast: bool, tz: Option<&str>, sql: &str) -> Vec<RecordBatch> {
        let field = Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, tz.map(Into::into)),
            true,
        );
        let values = TimestampMicrosecondArray::from(timestamps()).with_timezone_opt(tz);
        let batch =
            RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![Arc::new(values)])
                .unwrap();
        let ctx = SessionContext::new();
        if fast {
            register(&ctx);
        }
        ctx.register_batch("t", batch).unwrap();
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    }

    #[tokio::test]
    async fn gives_datafusion_s_answers_for_every_unit_and_time_zone() {
        let mut checked = 0;
        for tz in [
            None,
            Some("UTC"),
            Some("+00:00"),
            Some("Etc/UTC"),
            Some("Europe/Berlin"),
            Some("-05:00"),
        ] {
            for unit in [
                "microsecond",
                "second",
                "minute",
                "hour",
                "HOUR",
                "day",
                "week",
                "month",
                "quarter",
                "year",
            ] {
                for column in ["ts", "CAST(ts AS TIMESTAMP)"] {
                    let sql = format!("SELECT date_trunc('{unit}', {column}) AS d, ts FROM t");
                    let ours = answers(true, tz, &sql).await;
                    let theirs = answers(false, tz, &sql).await;
                    assert_eq!(ours, theirs, "date_trunc('{unit}', {column}) in {tz:?}");
                    assert_eq!(ours[0].schema(), theirs[0].schema());
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 120);
    }

    #[tokio::test]
    async fn the_fast_path_is_taken_for_utc_days_and_weeks() {
        let values: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_714_608_000_123_456), None])
                .with_timezone("UTC"),
        );
        let day = ColumnarValue::Scalar(ScalarValue::Utf8(Some("day".into())));
        let truncated = utc_fast_path(&[day, ColumnarValue::Array(Arc::clone(&values))])
            .expect("UTC days take the fast path");
        let truncated = truncated
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        // 2024-05-02T00:00:00Z.
        assert_eq!(truncated.value(0), 1_714_608_000_000_000);
        assert!(truncated.is_null(1));
        assert_eq!(truncated.timezone(), Some("UTC"));

        let month = ColumnarValue::Scalar(ScalarValue::Utf8(Some("month".into())));
        assert!(utc_fast_path(&[month, ColumnarValue::Array(values)]).is_none());
        let berlin: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(vec![Some(0)]).with_timezone("Europe/Berlin"));
        let week = ColumnarValue::Scalar(ScalarValue::Utf8(Some("week".into())));
        assert!(utc_fast_path(&[week, ColumnarValue::Array(berlin)]).is_none());
    }

    #[tokio::test]
    async fn array_position_of_a_constant_list_gives_datafusion_s_answers() {
        let names = arrow::array::StringArray::from_iter((0..5_000).map(|i: usize| {
            (!i.is_multiple_of(7)).then(|| ["a", "b", "c", "", "Order Completed"][i % 5])
        }));
        let numbers = arrow::array::Int64Array::from_iter(
            (0..5_000).map(|i: i64| (i % 11 != 0).then_some(i % 6)),
        );
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
            ])),
            vec![Arc::new(names), Arc::new(numbers)],
        )
        .unwrap();
        let queries = [
            // (query, answered by the fast path)
            (
                "array_position(string_to_array('b,a,c,b', ','), name)",
                true,
            ),
            ("array_position(['Order Completed', '', 'x'], name)", true),
            ("array_position(['a', NULL, 'c'], name)", true),
            ("list_position(make_array(3, 1, 3, 5), n)", true),
            ("array_indexof([1, 2], n)", true),
            ("array_position(CAST(NULL AS VARCHAR[]), name)", false),
            (
                "array_position(string_to_array('a,b,c', ','), name, 2)",
                false,
            ),
            ("array_position(string_to_array(name, ','), 'a')", false),
            ("array_position([name, 'b'], name)", false),
        ];
        for (call, taken) in queries {
            let sql = format!("SELECT {call} AS p, name, n FROM t");
            let answer = |with_ours: bool| {
                let batch = batch.clone();
                let sql = sql.clone();
                async move {
                    let ctx = SessionContext::new();
                    if with_ours {
                        register(&ctx);
                    }
                    ctx.register_batch("t", batch).unwrap();
                    ctx.sql(&sql).await.unwrap().collect().await.unwrap()
                }
            };
            let before = FAST_CALLS.with(|calls| calls.get());
            let (ours, theirs) = (answer(true).await, answer(false).await);
            let answered = FAST_CALLS.with(|calls| calls.get()) > before;
            assert_eq!(answered, taken, "{call}: fast path taken");
            assert_eq!(ours, theirs, "{call}");
            assert_eq!(ours[0].schema(), theirs[0].schema());
            let found = ours
                .iter()
                .map(|b| b.column(0).len() - b.column(0).null_count());
            // Every call but the NULL list's finds values.
            let found = found.sum::<usize>();
            assert!(
                found > 500 || call.contains("NULL AS"),
                "{call} finds {found}"
            );
        }
    }

    #[test]
    fn the_constant_list_path_is_taken_only_where_it_answers() {
        let list = ScalarValue::List(ScalarValue::new_list_nullable(
            &[
                ScalarValue::from("x"),
                ScalarValue::from("y"),
                ScalarValue::from("x"),
            ],
            &DataType::Utf8,
        ));
        let values: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![
            Some("x"),
            Some("y"),
            Some("z"),
            None,
        ]));
        let args = [
            ColumnarValue::Scalar(list.clone()),
            ColumnarValue::Array(Arc::clone(&values)),
        ];
        let positions = constant_list_position(&args)
            .unwrap()
            .expect("a constant list");
        let expected: ArrayRef = Arc::new(UInt64Array::from(vec![Some(1), Some(2), None, None]));
        assert_eq!(&positions, &expected);
        // A start position, or the list as the column, goes to DataFusion.
        let from = ColumnarValue::Scalar(ScalarValue::Int64(Some(2)));
        let three = [args[0].clone(), args[1].clone(), from];
        assert!(constant_list_position(&three).unwrap().is_none());
        let swapped = [ColumnarValue::Array(values), ColumnarValue::Scalar(list)];
        assert!(constant_list_position(&swapped).unwrap().is_none());
    }

    #[tokio::test]
    async fn sql_sees_the_replacement_under_both_names() {
        let sql = "SELECT date_trunc('week', ts) AS a, datetrunc('week', ts) AS b FROM t";
        let batches = answers(true, Some("UTC"), sql).await;
        assert_eq!(batches[0].column(0), batches[0].column(1));
        assert!(batches.iter().map(RecordBatch::num_rows).sum::<usize>() > 60_000);
    }

    #[tokio::test]
    async fn url_host_answers_what_the_regular_expressions_answer() {
        let mut urls: Vec<Option<String>> = [
            "https://www.Example.com/path?q=1",
            "http://user:pw@www.example.com:8080/x",
            "HTTP://WWW.EXAMPLE.COM",
            "https://example.com#frag",
            "ftp://files.example.org/pub",
            "example.com/no-scheme",
            "www.example.com",
            "://missing-scheme.com/",
            "h2://a@b@c/d",
            "https://a/b@c",
            "https://www.www.example.com/",
            "mailto:someone@example.com",
            "https://例え.jp/パス",
            "https://İstanbul.example/",
            "https://ex.com/a\nb/c",
            "line one\nhttps://x.com/y",
            "a/b\nc/d\ne",
            "",
        ]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect();
        urls.push(None);
        // And strings of the characters that matter, in every order a small generator makes.
        let alphabet = [
            'h', 't', 'p', 's', ':', '/', '@', 'w', '.', '?', '#', '\n', 'W', 'é', 'x',
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let length = (state % 14) as usize;
            let text: String = (0..length)
                .map(|i| alphabet[((state >> (4 * i % 60)) as usize + i) % alphabet.len()])
                .collect();
            urls.push(Some(format!("https://{text}")));
            urls.push(Some(text));
        }
        let count = urls.len();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("u", DataType::Utf8View, true)])),
            vec![Arc::new(arrow::array::StringViewArray::from(urls))],
        )
        .unwrap();
        let ctx = SessionContext::new();
        register(&ctx);
        ctx.register_batch("t", batch).unwrap();
        let sql = r"SELECT u, url_host(u) AS ours,
                   regexp_replace(regexp_replace(lower(coalesce(u, '')),
                       '^[a-z]+://([^@/]*@)?(www\.)?', ''), '[/:?#].*$', '') AS theirs
                   FROM t";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut checked = 0;
        for batch in &batches {
            let ours = arrow::compute::cast(batch.column(1), &DataType::Utf8).unwrap();
            let theirs = arrow::compute::cast(batch.column(2), &DataType::Utf8).unwrap();
            let urls = arrow::compute::cast(batch.column(0), &DataType::Utf8).unwrap();
            for row in 0..batch.num_rows() {
                assert_eq!(
                    ours.as_string::<i32>().value(row),
                    theirs.as_string::<i32>().value(row),
                    "{:?}",
                    urls.as_string::<i32>()
                        .is_valid(row)
                        .then(|| urls.as_string::<i32>().value(row))
                );
                checked += 1;
            }
        }
        assert_eq!(checked, count);
        let hosts = ctx
            .sql("SELECT url_host('https://WWW.Example.com:443/') AS h, url_host(NULL) AS n")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let row = &hosts[0];
        assert_eq!(row.column(0).as_string::<i32>().value(0), "example.com");
        assert_eq!(row.column(1).as_string::<i32>().value(0), "");
    }
}
