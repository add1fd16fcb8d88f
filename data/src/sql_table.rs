//! Lance tables for DataFusion without table-level schema metadata.
//!
//! Why: every firebrand dataset carries `firebrand.kind` in its schema metadata. DataFusion merges
//! the schema metadata of both sides of a join, and when the values conflict (`chat` joined with
//! `tokens`) the merged value depends on the side order, which the physical optimizer's projection
//! pushdown changes; its invariant check then fails with "Schema mismatch" although only metadata
//! differs. SQL does not need the kind (query results are cast back to a kind by name in `sql.rs`),
//! so the tables are registered with the metadata removed, both in the logical schema and in the
//! batches the scan produces. Projection, filter and limit pushdown still reach Lance.

use std::fmt;
use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableProvider;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use lance::datafusion::LanceTableProvider;

fn strip(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().clone()))
}

/// A Lance dataset as a DataFusion table whose schema has no table-level metadata.
#[derive(Debug)]
pub struct PlainLanceTable {
    inner: LanceTableProvider,
    schema: SchemaRef,
}

impl PlainLanceTable {
    /// Wraps a dataset.
    pub fn new(dataset: Arc<lance::Dataset>) -> Self {
        let inner = LanceTableProvider::new(dataset, false, false);
        let schema = strip(&inner.schema());
        PlainLanceTable { inner, schema }
    }
}

#[async_trait]
impl TableProvider for PlainLanceTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(StripMetadataExec::new(plan)))
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}

/// Passes its input's batches through with the schema metadata removed.
#[derive(Debug)]
struct StripMetadataExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl StripMetadataExec {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let schema = strip(&input.schema());
        let props = input.properties();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            props.partitioning.clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        StripMetadataExec {
            input,
            schema,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for StripMetadataExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StripMetadataExec")
    }
}

impl ExecutionPlan for StripMetadataExec {
    fn name(&self) -> &str {
        "StripMetadataExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(child) if children.is_empty() => Ok(Arc::new(StripMetadataExec::new(child))),
            _ => Err(datafusion::error::DataFusionError::Internal(
                "StripMetadataExec takes one child".into(),
            )),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let schema = self.schema.clone();
        let stream = self.input.execute(partition, context)?;
        let out = schema.clone();
        let batches = stream.map(move |batch| {
            let batch = batch?;
            // The row count matters for scans that project no column (`count(*)`).
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            Ok(RecordBatch::try_new_with_options(
                out.clone(),
                batch.columns().to_vec(),
                &options,
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
