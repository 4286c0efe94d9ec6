//! The canonical `events` schema: one row per event, the columns users write SQL against.
//!
//! Names are stable and documented in the README; add columns when needed, never rename.
//! `event_date` is the Delta partition column and stays last, because Delta scans return
//! partition columns after the data columns.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Name of the partition column.
pub const EVENT_DATE: &str = "event_date";

/// Column names in schema order.
pub const COLUMNS: &[&str] = &[
    "message_id",
    "type",
    "event",
    "timestamp",
    "received_at",
    "sent_at",
    "source",
    "anonymous_id",
    "user_id",
    "session_id",
    "group_id",
    "previous_id",
    "page_url",
    "page_path",
    "page_title",
    "page_referrer",
    "referrer_host",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "user_agent",
    "browser",
    "os",
    "device_type",
    "is_bot",
    "ip",
    "locale",
    "properties",
    "traits",
    "context",
    EVENT_DATE,
];

/// Microsecond UTC timestamps: the Delta `timestamp` type.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields = COLUMNS
        .iter()
        .map(|&name| {
            let (data_type, nullable) = match name {
                "message_id" | "type" | "source" => (DataType::Utf8, false),
                "timestamp" | "received_at" => (timestamp_type(), false),
                "sent_at" => (timestamp_type(), true),
                "is_bot" => (DataType::Boolean, true),
                EVENT_DATE => (DataType::Date32, false),
                _ => (DataType::Utf8, true),
            };
            Field::new(name, data_type, nullable)
        })
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
});

/// The Arrow schema of the `events` table.
pub fn events_schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_column_is_last() {
        let schema = events_schema();
        assert_eq!(schema.fields().last().unwrap().name(), EVENT_DATE);
        assert_eq!(schema.fields().len(), COLUMNS.len());
    }
}
