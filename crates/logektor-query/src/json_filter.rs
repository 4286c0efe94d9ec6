//! `json_as_text(doc, path…) = 'value'` in a filter, without parsing every document.
//!
//! The JSON property filters of dashboards (`WHERE json_as_text(properties, 'product_id') =
//! 'sku-7'`) parse each row's document to find one key: ~170 ns per row over ten million events,
//! most of such a query's time. Yet a document that holds the value must contain its text: a
//! JSON string without escapes is its own bytes between the quotes, and any other value is
//! returned as its raw JSON text. Only an escape (`\u002d` for `-`, `\"`, `\/`, …) can spell the
//! value differently, and every escape starts with a backslash.
//!
//! So [`JsonEqualsFilter`], an analyzer rule, rewrites each top-level conjunct of a filter of
//! that shape (also with `json_get_str`, and with the sides swapped) into
//! `<function>_equals(doc, path…, 'value')`, which [`JsonEquals`] evaluates in two steps: a
//! substring search for the value or a backslash (memchr-fast), then the original function
//! and the comparison on the rows that pass only. Other rows are false: the equality could
//! not hold there, and in a filter a false and a NULL both drop the row, which is why only
//! top-level conjuncts are rewritten (under `NOT` or `OR` a NULL would differ from false).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Scalar, StringArray};
use arrow::compute::kernels::boolean::or_kleene;
use arrow::compute::kernels::cmp::eq;
use arrow::compute::{contains, filter};
use arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::{Transformed, TransformedResult};
use datafusion::common::{Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::ReturnFieldArgs;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::logical_plan::Filter;
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The JSON functions whose equality [`JsonEquals`] may evaluate: each returns a value that,
/// in a document without escapes, appears verbatim in the document.
const FUNCTIONS: &[&str] = &["json_as_text", "json_get_str"];

/// The analyzer rule described in the [module docs](self).
#[derive(Debug, Default)]
pub struct JsonEqualsFilter;

impl AnalyzerRule for JsonEqualsFilter {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let LogicalPlan::Filter(filter) = plan else {
                return Ok(Transformed::no(plan));
            };
            let mut changed = false;
            let conjuncts = split_conjunction_owned(filter.predicate.clone())
                .into_iter()
                .map(|conjunct| match rewritten(&conjunct) {
                    Some(rewritten) => {
                        changed = true;
                        rewritten
                    }
                    None => conjunct,
                })
                .collect::<Vec<_>>();
            if !changed {
                return Ok(Transformed::no(LogicalPlan::Filter(filter)));
            }
            let predicate = conjunction(conjuncts).expect("at least one conjunct");
            Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
                predicate,
                filter.input,
            )?)))
        })
        .data()
    }

    fn name(&self) -> &str {
        "json_equals_filter"
    }
}

/// `<function>_equals(doc, path…, value)` for a conjunct `<function>(doc, path…) = value`.
fn rewritten(conjunct: &Expr) -> Option<Expr> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = conjunct
    else {
        return None;
    };
    let (call, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::ScalarFunction(call), Expr::Literal(value, _))
        | (Expr::Literal(value, _), Expr::ScalarFunction(call)) => (call, value),
        _ => return None,
    };
    let value = text(value)?;
    if !FUNCTIONS.contains(&call.func.name()) || call.args.len() < 2 {
        return None;
    }
    // The path must be literal: it is passed through as the function received it.
    if !call.args[1..]
        .iter()
        .all(|arg| matches!(arg, Expr::Literal(..)))
    {
        return None;
    }
    let mut args = call.args.clone();
    args.push(Expr::Literal(
        ScalarValue::Utf8(Some(value.to_owned())),
        None,
    ));
    let equals = ScalarUDF::new_from_impl(JsonEquals::new(Arc::clone(&call.func)));
    Some(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(equals),
        args,
    )))
}

/// The text of a non-null string literal.
pub(crate) fn text(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::Utf8View(Some(text))
        | ScalarValue::LargeUtf8(Some(text)) => Some(text),
        _ => None,
    }
}

/// `<function>(doc, path…) = value` as true or false (see the [module docs](self)).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct JsonEquals {
    function: Arc<ScalarUDF>,
    name: String,
    signature: Signature,
}

impl JsonEquals {
    pub fn new(function: Arc<ScalarUDF>) -> Self {
        Self {
            name: format!("{}_equals", function.name()),
            function,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonEquals {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let config = args.config_options;
        let mut values = args.args;
        let value = match values.pop() {
            Some(ColumnarValue::Scalar(value)) => text(&value).map(str::to_owned),
            _ => None,
        };
        let Some(value) = value else {
            return datafusion::common::internal_err!("{} needs a string value last", self.name);
        };
        let documents = match values.first() {
            Some(ColumnarValue::Array(documents))
                if matches!(
                    documents.data_type(),
                    DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
                ) =>
            {
                Some(Arc::clone(documents))
            }
            _ => None,
        };
        // A scalar document or another type: no prefilter, the function on every row.
        let Some(documents) = documents else {
            return self.equals(values, &args.arg_fields, config, rows, &value, None);
        };
        let candidates = or_kleene(
            &contains(&documents, &scalar_like(&documents, &value)?)?,
            &contains(&documents, &scalar_like(&documents, "\\")?)?,
        )?;
        let candidates = without_nulls(&candidates);
        let picked = candidates.true_count();
        if picked == 0 {
            return Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(vec![
                false;
                rows
            ]))));
        }
        values[0] = ColumnarValue::Array(filter(documents.as_ref(), &candidates)?);
        let ColumnarValue::Array(matched) = self.equals(
            values,
            &args.arg_fields,
            config,
            picked,
            &value,
            Some(&candidates),
        )?
        else {
            unreachable!("equals answers an array for an array")
        };
        Ok(ColumnarValue::Array(matched))
    }
}

impl JsonEquals {
    /// The function on `values` (`rows` rows) compared with `value`, NULL as false; with
    /// `candidates`, the answers are those rows' and are spread back over all of them.
    fn equals(
        &self,
        values: Vec<ColumnarValue>,
        arg_fields: &[Arc<Field>],
        config_options: Arc<ConfigOptions>,
        rows: usize,
        value: &str,
        candidates: Option<&BooleanArray>,
    ) -> Result<ColumnarValue> {
        // The value's field is dropped with the value; a caller that passed no fields gets
        // them from the arguments.
        let arg_fields = match arg_fields.get(..values.len()) {
            Some(fields) => fields.to_vec(),
            None => values
                .iter()
                .enumerate()
                .map(|(i, v)| Arc::new(Field::new(format!("arg_{i}"), v.data_type(), true)))
                .collect(),
        };
        let return_field = self.function.return_field_from_args(ReturnFieldArgs {
            arg_fields: &arg_fields,
            scalar_arguments: &values
                .iter()
                .map(|v| match v {
                    ColumnarValue::Scalar(s) => Some(s),
                    ColumnarValue::Array(_) => None,
                })
                .collect::<Vec<_>>(),
        })?;
        let texts = self.function.invoke_with_args(ScalarFunctionArgs {
            args: values,
            arg_fields,
            number_rows: rows,
            return_field,
            config_options,
        })?;
        let texts = texts.into_array(rows)?;
        let texts = arrow::compute::cast(&texts, &DataType::Utf8)?;
        let equal = eq(&texts, &Scalar::new(StringArray::from(vec![value])))?;
        let equal = without_nulls(&equal);
        let Some(candidates) = candidates else {
            return Ok(ColumnarValue::Array(Arc::new(equal)));
        };
        // One answer per candidate, in order: `&&` draws the next only for a candidate.
        let mut answers = equal.iter();
        let spread: BooleanArray = candidates
            .iter()
            .map(|candidate| {
                Some(candidate == Some(true) && answers.next().flatten() == Some(true))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(spread)))
    }
}

/// `text` as a one-value array of `like`'s string type, for arrow's `contains` kernel.
pub(crate) fn scalar_like(like: &ArrayRef, text: &str) -> Result<Scalar<ArrayRef>> {
    let one: ArrayRef = Arc::new(StringArray::from(vec![text]));
    Ok(Scalar::new(arrow::compute::cast(&one, like.data_type())?))
}

/// `array` with NULL read as false.
fn without_nulls(array: &BooleanArray) -> BooleanArray {
    match array.nulls() {
        None => array.clone(),
        Some(_) => array.iter().map(|v| Some(v == Some(true))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::run_with_plan;
    use arrow::array::StringViewArray;
    use arrow::datatypes::Schema;
    use arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    /// Documents where a substring search alone would be wrong either way: escapes spelling the
    /// value differently, the value under another key or inside a longer one, non-strings.
    const DOCUMENTS: &[Option<&str>] = &[
        Some(r#"{"product_id":"sku-7","price":10}"#),
        Some(r#"{"product_id":"sku-70","price":11}"#),
        Some(r#"{"product_id":"sku\u002d7","price":12}"#),
        Some(r#"{"other":"sku-7","product_id":"sku-8","price":13}"#),
        Some(r#"{"product_id":"sku-7\"","price":14}"#),
        Some(r#"{"product_id":7,"price":15}"#),
        Some(r#"{"product_id":null,"price":16}"#),
        Some(r#"{"a":{"product_id":"sku-7"},"price":17}"#),
        Some(r#"{"product_id":"a\\b","price":18}"#),
        Some("not json sku-7"),
        None,
    ];

    async fn context(rule: bool) -> SessionContext {
        let mut state = SessionStateBuilder::new().with_default_features();
        if rule {
            state = state.with_analyzer_rule(Arc::new(JsonEqualsFilter));
        }
        let mut ctx = SessionContext::new_with_state(state.build());
        datafusion_functions_json::register_all(&mut ctx).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "properties",
            DataType::Utf8View,
            true,
        )]));
        // Two batches, so a batch without any candidate is covered too.
        let batch = |docs: &[Option<&str>]| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(StringViewArray::from(docs.to_vec())) as ArrayRef],
            )
            .unwrap()
        };
        let table = MemTable::try_new(
            Arc::clone(&schema),
            vec![vec![
                batch(DOCUMENTS),
                batch(&[Some(r#"{"product_id":"none"}"#)]),
            ]],
        )
        .unwrap();
        ctx.register_table("events", Arc::new(table)).unwrap();
        ctx
    }

    async fn prices(ctx: &SessionContext, sql: &str) -> (Vec<i64>, String) {
        let (batches, plan) = run_with_plan(ctx, sql).await;
        let mut prices: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let column = arrow::compute::cast(b.column(0), &DataType::Int64).unwrap();
                let column = column
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .unwrap()
                    .clone();
                column.iter().map(|v| v.unwrap_or(-1)).collect::<Vec<_>>()
            })
            .collect();
        prices.sort_unstable();
        (prices, plan)
    }

    #[tokio::test]
    async fn equalities_in_filters_answer_as_the_json_functions_do() {
        let with = context(true).await;
        let without = context(false).await;
        let price = "json_get_int(properties, 'price')";
        let cases = [
            // (condition, rewritten, the prices it must select)
            (
                "json_as_text(properties, 'product_id') = 'sku-7'",
                true,
                vec![10, 12],
            ),
            (
                "'sku-7' = json_as_text(properties, 'product_id')",
                true,
                vec![10, 12],
            ),
            (
                "json_get_str(properties, 'product_id') = 'sku-7'",
                true,
                vec![10, 12],
            ),
            ("(properties->>'product_id') = 'sku-7'", true, vec![10, 12]),
            (
                "json_as_text(properties, 'product_id') = 'sku-7\"'",
                true,
                vec![14],
            ),
            (
                "json_as_text(properties, 'product_id') = '7'",
                true,
                vec![15],
            ),
            ("json_get_str(properties, 'product_id') = '7'", true, vec![]),
            (
                "json_as_text(properties, 'product_id') = 'a\\b'",
                true,
                vec![18],
            ),
            (
                "json_as_text(properties, 'a', 'product_id') = 'sku-7'",
                true,
                vec![17],
            ),
            (
                "json_as_text(properties, 'product_id') = 'sku-7' AND properties IS NOT NULL",
                true,
                vec![10, 12],
            ),
            (
                "json_as_text(properties, 'product_id') = 'missing'",
                true,
                vec![],
            ),
            // Not top-level conjuncts: NULL and false differ there, so they are left alone.
            (
                "NOT (json_as_text(properties, 'product_id') = 'sku-7')",
                false,
                vec![-1, 11, 13, 14, 15, 18],
            ),
            (
                "json_as_text(properties, 'product_id') = 'sku-7' OR properties IS NULL",
                false,
                vec![-1, 10, 12],
            ),
            (
                "json_as_text(properties, 'product_id') <> 'sku-7'",
                false,
                vec![-1, 11, 13, 14, 15, 18],
            ),
        ];
        for (condition, rewritten, expected) in cases {
            let sql = format!("SELECT {price} FROM events WHERE {condition}");
            let (ours, plan) = prices(&with, &sql).await;
            let (theirs, _) = prices(&without, &sql).await;
            assert_eq!(ours, theirs, "{condition}");
            assert_eq!(ours, expected, "{condition}");
            assert_eq!(plan.contains("_equals("), rewritten, "{condition}: {plan}");
        }
    }
}
