//! The `events` table as DataFusion sees it: the Delta snapshot ∪ the in-memory buffer.

use std::sync::Arc;

use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

/// A union of the table scan and the buffered batches. Each part gets the same projection,
/// filters and limit; filters are `Inexact` so DataFusion re-applies them above the union.
#[derive(Debug)]
pub struct EventsProvider {
    schema: SchemaRef,
    table: Option<Arc<dyn TableProvider>>,
    buffer: Arc<MemTable>,
}

impl EventsProvider {
    /// `buffered` must hold only rows that are not in `table`'s snapshot. Buffered batches are
    /// cast to the table provider's schema (Delta scans may choose other string or partition
    /// encodings than the ingest path builds).
    pub fn try_new(
        table: Option<Arc<dyn TableProvider>>,
        buffered: Vec<RecordBatch>,
        canonical: SchemaRef,
    ) -> Result<Self> {
        let schema = match &table {
            Some(provider) => provider.schema(),
            None => canonical,
        };
        let buffered = buffered
            .into_iter()
            .filter(|batch| batch.num_rows() > 0)
            .map(|batch| conform(&batch, &schema))
            .collect::<Result<Vec<_>>>()?;
        let buffer = Arc::new(MemTable::try_new(Arc::clone(&schema), vec![buffered])?);
        Ok(Self {
            schema,
            table,
            buffer,
        })
    }
}

fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                datafusion::error::DataFusionError::Internal(format!(
                    "buffered batch lacks column {}",
                    field.name()
                ))
            })?;
            Ok(cast(column, field.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[async_trait]
impl TableProvider for EventsProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut inputs = Vec::with_capacity(2);
        if let Some(table) = &self.table {
            inputs.push(table.scan(state, projection, filters, limit).await?);
        }
        inputs.push(self.buffer.scan(state, projection, filters, limit).await?);
        UnionExec::try_new(inputs)
    }
}
