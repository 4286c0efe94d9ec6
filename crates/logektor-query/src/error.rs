use datafusion::error::DataFusionError;

/// Why a query failed, split by whose fault it is: the caller's (bad SQL, a refused statement,
/// a limit hit) or ours.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    InvalidSql(String),
    #[error("read-only: {0}")]
    NotAllowed(String),
    #[error("query exceeded the memory limit of {limit_bytes} bytes: {detail}")]
    MemoryLimit { limit_bytes: usize, detail: String },
    #[error("query exceeded the time limit of {seconds:.1}s")]
    Timeout { seconds: f64 },
    #[error("result exceeded the size limit of {limit_bytes} bytes; add a LIMIT or aggregate")]
    ResultTooLarge { limit_bytes: usize },
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    /// True when the caller can fix it (HTTP 4xx), false for our failures (HTTP 5xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, QueryError::Internal(_))
    }

    /// A short stable code for API bodies.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::InvalidSql(_) => "invalid_sql",
            QueryError::NotAllowed(_) => "not_allowed",
            QueryError::MemoryLimit { .. } => "memory_limit",
            QueryError::Timeout { .. } => "timeout",
            QueryError::ResultTooLarge { .. } => "result_too_large",
            QueryError::Internal(_) => "internal",
        }
    }

    pub(crate) fn from_datafusion(err: DataFusionError, memory_limit: usize) -> Self {
        let root = err.find_root();
        match root {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_)
            | DataFusionError::ArrowError(..) => QueryError::InvalidSql(root.to_string()),
            // The Parquet reader evaluates pushed-down predicates; their failures (a cast or a
            // division that fails on a value) come back wrapped as Parquet errors but are the
            // query's, like the same failure above the scan.
            DataFusionError::ParquetError(parquet)
                if matches!(
                    parquet.as_ref(),
                    parquet::errors::ParquetError::External(inner)
                        if inner.downcast_ref::<arrow::error::ArrowError>().is_some()
                ) =>
            {
                QueryError::InvalidSql(root.to_string())
            }
            DataFusionError::ResourcesExhausted(detail) => QueryError::MemoryLimit {
                limit_bytes: memory_limit,
                detail: detail.clone(),
            },
            _ => QueryError::Internal(err.to_string()),
        }
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
