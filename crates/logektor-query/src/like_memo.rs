//! `LIKE '%…%'` evaluated once per distinct value of a batch, not once per row.
//!
//! URL and path columns repeat: ten million `page_url` values hold about a hundred thousand
//! distinct URLs, and a batch of 8,192 rows from a few hundred to a few thousand (sorted by
//! event name, neighbouring rows share pages). Arrow's `LIKE` kernel
//! matches the pattern on every row (~43 ns for a URL with `memmem`), which made a
//! `WHERE page_url LIKE '%utm_campaign=x%'` spend three quarters of its CPU there.
//!
//! The Parquet reader decodes a dictionary-encoded column into `Utf8View` views that point
//! at the dictionary's bytes, so rows holding the same dictionary entry hold the same 16-byte
//! view. A view names its string exactly within one array (its length and inline bytes or
//! prefix, and a buffer and offset that never change), so equal views are equal strings.
//! [`LikeMemo`] therefore finds each batch's distinct views (through a small direct-mapped
//! table, `RecentViews`), runs arrow's kernel on those values only (for a pattern arrow
//! would match with a regex, the same regex, compiled once per query), and spreads the
//! answers back over the rows. Strings decoded from plain pages have views of their own and
//! simply miss; a batch whose first rows are mostly distinct is handed to the kernel whole.
//!
//! [`MemoizedLike`], an analyzer rule, rewrites `LIKE`, `ILIKE` and their negations inside
//! filter predicates into [`LikeMemo`]. The answers are the kernel's, NULL included, so the
//! rewrite holds under `NOT`, `OR` and anywhere else in a predicate. It leaves alone what the
//! optimizer handles better (patterns that do not start with a wildcard, which it may turn
//! into equality, `starts_with` or a statistics range), patterns with an `ESCAPE` clause, and
//! projections (where the rewrite would rename the output column).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Scalar, StringViewArray, UInt32Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter;
use arrow::compute::kernels::boolean::not;
use arrow::compute::kernels::comparison::{contains, ilike, like, nilike, nlike};
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::{Like, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::json_filter::{scalar_like, text};

/// Rows looked at before deciding whether a batch repeats enough to be worth the lookups.
const PROBE_ROWS: usize = 1024;

/// The analyzer rule described in the [module docs](self).
#[derive(Debug, Default)]
pub struct MemoizedLike;

impl AnalyzerRule for MemoizedLike {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| match plan {
            LogicalPlan::Filter(_) => plan.map_expressions(|predicate| {
                predicate.transform_up(|expr| {
                    Ok(match rewritten(&expr) {
                        Some(memo) => Transformed::yes(memo),
                        None => Transformed::no(expr),
                    })
                })
            }),
            _ => Ok(Transformed::no(plan)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "memoized_like"
    }
}

/// `like_memo(expr, pattern)` (or its `ILIKE`/`NOT` variant) for `expr LIKE pattern`.
fn rewritten(expr: &Expr) -> Option<Expr> {
    let Expr::Like(Like {
        negated,
        expr,
        pattern,
        escape_char: None,
        case_insensitive,
    }) = expr
    else {
        return None;
    };
    // Type coercion has cast a `Utf8` pattern to the value's type; the optimizer folds it.
    let literal = match pattern.as_ref() {
        Expr::Cast(cast) => cast.expr.as_ref(),
        pattern => pattern,
    };
    let Expr::Literal(literal, _) = literal else {
        return None;
    };
    let text = text(literal)?;
    if !(text.starts_with('%') || text.starts_with('_')) || text.chars().all(|c| c == '%') {
        return None;
    }
    let memo = LikeMemo::new(*negated, *case_insensitive);
    Some(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(memo)),
        vec![expr.as_ref().clone(), pattern.as_ref().clone()],
    )))
}

/// `value [NOT] [I]LIKE pattern` answered once per distinct view (see the [module docs](self)).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LikeMemo {
    negated: bool,
    case_insensitive: bool,
    signature: Signature,
    regex: RegexCache,
}

/// The regex of the last pattern [`LikeMemo`] matched with one. Arrow's kernel compiles the
/// pattern's regex on every call, which was 9% of a URL `LIKE '%utm_campaign=x%'`'s CPU
/// (one call per batch). Not part of the function's identity.
#[derive(Debug, Default)]
struct RegexCache(std::sync::Mutex<Option<(String, Arc<regex::Regex>)>>);

impl PartialEq for RegexCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RegexCache {}

impl std::hash::Hash for RegexCache {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl RegexCache {
    /// The regex arrow's kernel builds for a case-sensitive `pattern` without escapes, shared
    /// by the query's partitions. (A clone per batch, each with caches of its own instead of
    /// the shared pool's, measured 4% slower: building the caches costs more.)
    fn get(&self, pattern: &str) -> Result<Arc<regex::Regex>> {
        let mut cached = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((text, regex)) = cached.as_ref()
            && text == pattern
        {
            return Ok(Arc::clone(regex));
        }
        let regex = Arc::new(like_regex(pattern)?);
        *cached = Some((pattern.to_string(), Arc::clone(&regex)));
        Ok(regex)
    }
}

/// Arrow's translation of a `LIKE` pattern without escapes into a regex (`regex_like` in
/// `arrow-string`): `%` any characters, `_` one, no anchor where the pattern starts or ends
/// with `%`, and `.` matching newlines.
fn like_regex(pattern: &str) -> Result<regex::Regex> {
    let mut regex = String::with_capacity(pattern.len() * 2);
    let body = match pattern.strip_prefix('%') {
        Some(body) => body,
        None => {
            regex.push('^');
            pattern
        }
    };
    for c in body.chars() {
        match c {
            '%' => regex.push_str(".*"),
            '_' => regex.push('.'),
            c => regex.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    if regex.ends_with(".*") {
        regex.truncate(regex.len() - 2);
    } else {
        regex.push('$');
    }
    regex::RegexBuilder::new(&regex)
        .dot_matches_new_line(true)
        .build()
        .map_err(|err| datafusion::error::DataFusionError::External(Box::new(err)))
}

/// What [`LikeMemo::kernel`] matches with: the pattern, and for a regex pattern the piece
/// every match contains and the compiled regex.
struct Matcher<'a> {
    pattern: &'a Scalar<ArrayRef>,
    required: Option<&'a Scalar<ArrayRef>>,
    regex: Option<Arc<regex::Regex>>,
}

impl LikeMemo {
    pub fn new(negated: bool, case_insensitive: bool) -> Self {
        Self {
            negated,
            case_insensitive,
            signature: Signature::any(2, Volatility::Immutable),
            regex: RegexCache::default(),
        }
    }

    /// Arrow's kernel for this operator. Where it would run a regex, and a piece of the
    /// pattern is `required` verbatim in every match, only the values that contain it (a
    /// `memmem` search) are matched, by the matcher's regex where it has one (the regex the
    /// kernel would build) and by the kernel otherwise; the others cannot match.
    fn kernel(&self, values: &dyn Array, matcher: &Matcher) -> Result<BooleanArray> {
        let pattern = matcher.pattern;
        let Some(required) = matcher.required.filter(|_| !self.case_insensitive) else {
            return Ok(match (self.negated, self.case_insensitive) {
                (false, false) => like(&values, pattern)?,
                (false, true) => ilike(&values, pattern)?,
                (true, false) => nlike(&values, pattern)?,
                (true, true) => nilike(&values, pattern)?,
            });
        };
        let candidates = contains(&values, required)?;
        let candidates = match candidates.nulls() {
            Some(nulls) => candidates.values() & nulls.inner(),
            None => candidates.values().clone(),
        };
        let bits = match (&matcher.regex, values.as_string_view_opt()) {
            // The regex compiled once, on the candidates in place.
            (Some(regex), Some(strings)) => BooleanBuffer::collect_bool(values.len(), |row| {
                candidates.value(row) && regex.is_match(strings.value(row))
            }),
            _ => {
                let matched = like(
                    &filter(values, &BooleanArray::new(candidates.clone(), None))?,
                    pattern,
                )?;
                // One answer per candidate, in order.
                let mut answers = matched.values().iter();
                BooleanBuffer::collect_bool(values.len(), |row| {
                    candidates.value(row) && answers.next() == Some(true)
                })
            }
        };
        let matched = BooleanArray::new(bits, values.nulls().cloned());
        Ok(if self.negated {
            not(&matched)?
        } else {
            matched
        })
    }

    /// The kernel's answers for `values`, computed on each distinct view once (near enough:
    /// see [`RecentViews`]).
    fn memoized(&self, values: &StringViewArray, matcher: &Matcher) -> Result<BooleanArray> {
        let rows = values.len();
        let views = values.views();
        // Each row's slot in `firsts`, the first row holding its view; NULL rows get
        // `u32::MAX` (their view may equal an empty string's).
        let mut slots: Vec<u32> = Vec::with_capacity(rows);
        let mut firsts: Vec<u32> = Vec::new();
        let mut recent = RecentViews::new();
        for (row, &view) in views.iter().enumerate() {
            if row == PROBE_ROWS && firsts.len() * 2 > PROBE_ROWS {
                return self.kernel(values, matcher);
            }
            if values.is_null(row) {
                slots.push(u32::MAX);
                continue;
            }
            let slot = recent.slot(view, || {
                firsts.push(row as u32);
                (firsts.len() - 1) as u32
            });
            slots.push(slot);
        }
        let distinct = arrow::compute::take(values, &UInt32Array::from(firsts), None)?;
        // A byte per distinct value, where a bit read through the array was 3% of a URL
        // `LIKE`'s CPU; a NULL row's slot is past the end.
        let answers: Vec<bool> = self.kernel(&distinct, matcher)?.values().iter().collect();
        let bits = BooleanBuffer::collect_bool(rows, |row| {
            answers.get(slots[row] as usize).copied().unwrap_or(false)
        });
        Ok(BooleanArray::new(bits, values.nulls().cloned()))
    }
}

/// A direct-mapped table from a view to the slot of the first row holding it, for
/// [`LikeMemo::memoized`]: one multiply and one compare per row where a hash map spent 18% of
/// a URL `LIKE`'s CPU (hashing, probing, growing). A view whose entry another view took is
/// simply given a new slot: the same value is then matched twice, never answered wrongly,
/// because a slot is only ever reached through a view equal to its first row's. On the
/// benchmark table a batch of 8,192 rows holds 440–5,400 distinct URLs (median ~1,500), and the
/// most distinct batches go to the kernel whole, so collisions in 4,096 entries cost a few
/// repeated matches.
struct RecentViews {
    entries: Box<[(u128, u32)]>,
}

impl RecentViews {
    const BITS: u32 = 12;

    fn new() -> Self {
        Self {
            entries: vec![(0, u32::MAX); 1 << Self::BITS].into_boxed_slice(),
        }
    }

    /// The slot of `view`: the one it got before, if its entry still holds it, else `new()`.
    fn slot(&mut self, view: u128, new: impl FnOnce() -> u32) -> u32 {
        // Long strings differ in their buffer offset (high half), short ones anywhere.
        let mixed = ((view as u64) ^ ((view >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let entry = &mut self.entries[(mixed >> (64 - Self::BITS)) as usize];
        if entry.1 != u32::MAX && entry.0 == view {
            return entry.1;
        }
        let slot = new();
        *entry = (view, slot);
        slot
    }
}

impl ScalarUDFImpl for LikeMemo {
    fn name(&self) -> &str {
        match (self.negated, self.case_insensitive) {
            (false, false) => "like_memo",
            (false, true) => "ilike_memo",
            (true, false) => "not_like_memo",
            (true, true) => "not_ilike_memo",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [values, pattern] = args.args.as_slice() else {
            return internal_err!("{} takes a value and a pattern", self.name());
        };
        let ColumnarValue::Scalar(pattern) = pattern else {
            return internal_err!("{} needs a literal pattern", self.name());
        };
        let values = values.to_array(rows)?;
        let Some(pattern) = text(pattern) else {
            // A NULL pattern answers NULL, as the kernel does.
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
        };
        let required_piece = required_text(pattern);
        let regex = match required_piece {
            Some(_) if !self.case_insensitive => Some(self.regex.get(pattern)?),
            _ => None,
        };
        let required = required_piece
            .map(|text| scalar_like(&values, text))
            .transpose()?;
        let pattern = scalar_like(&values, pattern)?;
        let matcher = Matcher {
            pattern: &pattern,
            required: required.as_ref(),
            regex,
        };
        let answers = match values.data_type() {
            DataType::Utf8View => self.memoized(values.as_string_view(), &matcher)?,
            _ => self.kernel(&values, &matcher)?,
        };
        Ok(ColumnarValue::Array(Arc::new(answers)))
    }
}

/// The longest piece of `pattern` that every match contains verbatim, for a pattern arrow
/// matches with a regex: one with `_`, or with `%` between other characters (a `%…%` alone is
/// already a substring search). None for a pattern with escapes.
fn required_text(pattern: &str) -> Option<&str> {
    if pattern.contains('\\') {
        return None;
    }
    let inner = pattern.trim_matches('%');
    if !inner.contains(['%', '_']) {
        return None;
    }
    inner
        .split(['%', '_'])
        .max_by_key(|piece| piece.len())
        .filter(|piece| !piece.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::run_with_plan;
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    const PATTERNS: &[&str] = &[
        "%spring_sale%",
        "%utm_campaign=spring_sale%",
        "%example.com%post%",
        "%/blog/%",
        "_a%",
        "%",
        "%ß%",
        "%x",
        "%\\%%",
        "%_%",
        // Anchored at either end, regex metacharacters and a newline taken literally.
        "https://_xample%",
        "%spring_sale",
        "%/1_/spring_sale",
        "%m/2_%(x)%",
        "%.com/_%\n%",
        "%(x)_more",
    ];

    /// URLs repeated the way a dictionary-decoded column repeats them: equal rows share one
    /// view into one buffer, neighbours and far apart, with NULLs, inline (≤ 12-byte) strings,
    /// an empty string and case differences.
    fn repeated_urls(rows: usize) -> StringViewArray {
        let distinct = StringViewArray::from(vec![
            Some("https://example.com/blog/post?utm_campaign=spring_sale"),
            Some("https://example.com/pricing"),
            Some("https://EXAMPLE.com/Blog/Post?UTM_CAMPAIGN=SPRING_SALE"),
            Some("/a"),
            Some("ba"),
            Some(""),
            Some("straße%x"),
            None,
            Some("https://example.com/2a/(x)\nmore"),
            Some("/?c=spring_sale&x"),
            Some("see https://example.com/1x/spring_sale"),
        ]);
        let indices: Vec<u32> = (0..rows)
            .map(|row| [0, 9, 1, 2, 3, 0, 4, 5, 6, 7, 10, 8][row % 12])
            .collect();
        let taken = arrow::compute::take(&distinct, &UInt32Array::from(indices), None).unwrap();
        taken.as_string_view().clone()
    }

    #[test]
    fn the_required_piece_is_the_longest_literal_of_a_regex_pattern() {
        let cases = [
            ("%utm_campaign=spring_sale%", Some("campaign=spring")),
            ("%example.com%post%", Some("example.com")),
            ("_a%", Some("a")),
            // arrow's own substring search, escapes, nothing literal: no prefilter.
            ("%/blog/%", None),
            ("%a\\_b%", None),
            ("%_%", None),
        ];
        for (pattern, required) in cases {
            assert_eq!(required_text(pattern), required, "{pattern}");
        }
    }

    #[test]
    fn answers_as_the_kernel_does_for_every_operator() {
        // Mostly distinct values too: the probe hands those to the kernel.
        let distinct = StringViewArray::from(
            (0..3000)
                .map(|i| (i % 7 != 0).then(|| format!("https://example.com/{i}/spring_sale")))
                .collect::<Vec<_>>(),
        );
        // More distinct values than `RecentViews` has entries, repeating enough for the
        // memo: views collide in the table and take new slots.
        let many = StringViewArray::from(
            (0..6000)
                .map(|i| {
                    let campaign = ["spring_sale", "spring-sale", "summer"][i % 3];
                    Some(format!("https://example.com/{i}?utm_campaign={campaign}"))
                })
                .collect::<Vec<_>>(),
        );
        let indices: Vec<u32> = (0..40_000u32)
            .map(|row| {
                if row < 2048 {
                    row % 100
                } else {
                    row * 7_919 % 6000
                }
            })
            .collect();
        let colliding = arrow::compute::take(&many, &UInt32Array::from(indices), None).unwrap();
        let colliding = colliding.as_string_view().clone();
        for values in [repeated_urls(5000), repeated_urls(7), distinct, colliding] {
            let array: ArrayRef = Arc::new(values.clone());
            for text in PATTERNS {
                let required = required_text(text).map(|t| scalar_like(&array, t).unwrap());
                let pattern = scalar_like(&array, text).unwrap();
                for negated in [false, true] {
                    for case_insensitive in [false, true] {
                        let memo = LikeMemo::new(negated, case_insensitive);
                        // The cached regex where the function would use one, as it does.
                        let regex = (required.is_some() && !case_insensitive)
                            .then(|| memo.regex.get(text).unwrap());
                        let ours = Matcher {
                            pattern: &pattern,
                            required: required.as_ref(),
                            regex,
                        };
                        let arrows = Matcher {
                            pattern: &pattern,
                            required: None,
                            regex: None,
                        };
                        assert_eq!(
                            memo.memoized(&values, &ours).unwrap(),
                            memo.kernel(&values, &arrows).unwrap(),
                            "{} {text}",
                            memo.name(),
                        );
                    }
                }
            }
        }
    }

    async fn context(rule: bool) -> SessionContext {
        let mut state = SessionStateBuilder::new().with_default_features();
        if rule {
            state = state.with_analyzer_rule(Arc::new(MemoizedLike));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("url", DataType::Utf8View, true),
        ]));
        let urls = repeated_urls(100);
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(arrow::array::Int64Array::from_iter_values(0..100)),
                Arc::new(urls),
            ],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("events", Arc::new(table)).unwrap();
        ctx
    }

    async fn ids(ctx: &SessionContext, sql: &str) -> (Vec<i64>, String) {
        let (batches, plan) = run_with_plan(ctx, sql).await;
        let mut ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                ids.values().to_vec()
            })
            .collect();
        ids.sort_unstable();
        (ids, plan)
    }

    #[tokio::test]
    async fn filters_select_the_rows_they_selected_before() {
        let with = context(true).await;
        let without = context(false).await;
        let cases = [
            // (condition, rewritten into a memo)
            ("url LIKE '%spring_sale%'", true),
            ("url ILIKE '%spring_sale%'", true),
            ("url NOT LIKE '%spring_sale%'", true),
            ("url NOT ILIKE '%/blog/%'", true),
            ("NOT (url LIKE '%pricing')", true),
            ("url LIKE '%pricing' OR url IS NULL", true),
            ("(url LIKE '%blog%') IS NULL", true),
            ("url LIKE '_a'", true),
            // What the optimizer handles better, or an ESCAPE clause: left alone.
            ("url LIKE 'https://example.com/%'", false),
            ("url LIKE '%'", false),
            ("url LIKE '%\\%%' ESCAPE '\\'", false),
        ];
        for (condition, rewritten) in cases {
            let sql = format!("SELECT id FROM events WHERE {condition}");
            let (ours, plan) = ids(&with, &sql).await;
            let (theirs, _) = ids(&without, &sql).await;
            assert_eq!(ours, theirs, "{condition}");
            assert!(!ours.is_empty(), "{condition} selects nothing: a weak case");
            assert_eq!(
                plan.contains("like_memo("),
                rewritten,
                "{condition}: {plan}"
            );
        }
        // A projection keeps its name and the kernel.
        let frame = with
            .sql("SELECT url LIKE '%blog%' FROM events")
            .await
            .unwrap();
        let plan = frame.into_optimized_plan().unwrap();
        let plan = plan.display_indent().to_string();
        assert!(!plan.contains("like_memo("), "{plan}");
    }
}
