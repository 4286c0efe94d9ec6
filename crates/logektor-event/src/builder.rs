//! Canonical [`Event`](crate::Event)s into Arrow record batches of [`events_schema`].

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::record_batch::RecordBatch;

use crate::schema::events_schema;
use crate::segment::EventRow;

/// Appends events column by column; [`EventBatchBuilder::finish`] yields one record batch.
pub struct EventBatchBuilder {
    message_id: StringBuilder,
    kind: StringBuilder,
    event: StringBuilder,
    timestamp: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    sent_at: TimestampMicrosecondBuilder,
    source: StringBuilder,
    /// anonymous_id … context: the optional text columns, in schema order.
    optional_text: Vec<StringBuilder>,
    is_bot: BooleanBuilder,
    event_date: Date32Builder,
}

/// Number of optional text columns between `source` and `context`, `is_bot` excluded.
const OPTIONAL_TEXT_COLUMNS: usize = 24;

/// Where `is_bot` sits among the optional text columns (it is the only non-text one).
const BEFORE_BOT: usize = 19;

/// Bytes of text per column for a builder: `message_id`, `kind`, `event`, `source`, then the optional
/// text columns in schema order.
#[derive(Debug, Clone, Copy)]
struct TextBytes {
    message_id: usize,
    kind: usize,
    event: usize,
    source: usize,
    optional: [usize; OPTIONAL_TEXT_COLUMNS],
}

impl TextBytes {
    /// A guess for `rows` typical events, for a builder whose events are not known yet.
    fn guess(rows: usize) -> Self {
        Self {
            message_id: rows * 36,
            kind: rows * 5,
            event: rows * 16,
            source: rows * 8,
            optional: [rows * 16; OPTIONAL_TEXT_COLUMNS],
        }
    }

    /// Exactly what `events` hold.
    fn of(events: &[EventRow<'_>]) -> Self {
        let mut bytes = Self {
            message_id: 0,
            kind: 0,
            event: 0,
            source: 0,
            optional: [0; OPTIONAL_TEXT_COLUMNS],
        };
        for event in events {
            bytes.message_id += event.message_id.len();
            bytes.kind += event.kind.map_or(0, |kind| kind.as_str().len());
            bytes.event += event.event.as_deref().map_or(0, str::len);
            bytes.source += event.source.len();
            for (total, value) in bytes.optional.iter_mut().zip(optional_text(event)) {
                *total += value.map_or(0, str::len);
            }
        }
        bytes
    }
}

/// The optional text values of `event`, in schema order between `anonymous_id` and `context`,
/// without `is_bot`.
fn optional_text<'r>(event: &'r EventRow<'_>) -> [Option<&'r str>; OPTIONAL_TEXT_COLUMNS] {
    let [utm_source, utm_medium, utm_campaign, utm_term, utm_content] =
        event.utm.each_ref().map(Option::as_deref);
    let agent = event.agent.as_deref();
    [
        event.anonymous_id.as_deref(),
        event.user_id.as_deref(),
        event.session_id.as_deref(),
        event.group_id.as_deref(),
        event.previous_id.as_deref(),
        event.page_url.as_deref(),
        event.page_path.as_deref(),
        event.page_title.as_deref(),
        event.page_referrer.as_deref(),
        event.referrer_host.as_deref(),
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
        agent.map(|agent| agent.text.as_str()),
        agent.and_then(|agent| agent.browser.as_deref()),
        agent.and_then(|agent| agent.os.as_deref()),
        agent.map(|agent| agent.device_type),
        // is_bot sits here (BEFORE_BOT).
        event.ip.as_deref(),
        event.locale.as_deref(),
        event.properties.as_deref(),
        event.traits.as_deref(),
        event.context.as_deref(),
    ]
}

impl Default for EventBatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl EventBatchBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        Self::with_text_bytes(rows, TextBytes::guess(rows))
    }

    /// A builder for `rows` rows whose text takes `bytes`: sized exactly, nothing grows or is
    /// left over (the batches stay in the buffer until a flush, so slack there is memory held).
    fn with_text_bytes(rows: usize, bytes: TextBytes) -> Self {
        let timestamp = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        Self {
            message_id: StringBuilder::with_capacity(rows, bytes.message_id),
            kind: StringBuilder::with_capacity(rows, bytes.kind),
            event: StringBuilder::with_capacity(rows, bytes.event),
            timestamp: timestamp(),
            received_at: timestamp(),
            sent_at: timestamp(),
            source: StringBuilder::with_capacity(rows, bytes.source),
            optional_text: bytes
                .optional
                .iter()
                .map(|&data| StringBuilder::with_capacity(rows, data))
                .collect(),
            is_bot: BooleanBuilder::with_capacity(rows),
            event_date: Date32Builder::with_capacity(rows),
        }
    }

    pub fn len(&self) -> usize {
        self.message_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one row.
    pub fn append(&mut self, event: &EventRow<'_>) {
        self.message_id.append_value(&event.message_id);
        self.kind
            .append_option(event.kind.map(|kind| kind.as_str()));
        self.event.append_option(event.event.as_deref());
        self.timestamp.append_value(event.timestamp);
        self.received_at.append_value(event.received_at);
        self.sent_at.append_option(event.sent_at);
        self.source.append_value(&event.source);
        for (builder, value) in self.optional_text.iter_mut().zip(optional_text(event)) {
            builder.append_option(value);
        }
        self.is_bot
            .append_option(event.agent.as_ref().map(|agent| agent.is_bot));
        self.event_date.append_value(event.event_date);
    }

    pub fn finish(&mut self) -> RecordBatch {
        let mut text = self
            .optional_text
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.message_id.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.sent_at.finish()),
            Arc::new(self.source.finish()),
        ];
        columns.extend(text.by_ref().take(BEFORE_BOT));
        columns.push(Arc::new(self.is_bot.finish()));
        columns.extend(text);
        columns.push(Arc::new(self.event_date.finish()));
        RecordBatch::try_new(events_schema(), columns)
            .expect("the builder produces exactly the events schema")
    }
}

/// Builds one record batch from rows (owned [`Event`](crate::Event)s or borrowed), each column
/// allocated once at its exact size.
pub fn to_record_batch(rows: &[EventRow<'_>]) -> RecordBatch {
    let mut builder = EventBatchBuilder::with_text_bytes(rows.len(), TextBytes::of(rows));
    for row in rows {
        builder.append(row);
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::COLUMNS;
    use crate::segment::{Event, EventType};
    use arrow::array::{Array, BooleanArray, StringArray};

    #[test]
    fn every_field_lands_in_its_column() {
        let event = Event {
            message_id: "m".into(),
            kind: Some(EventType::Track),
            event: Some("e".into()),
            timestamp: 1,
            received_at: 2,
            sent_at: Some(3),
            source: "s".into(),
            anonymous_id: Some("anonymous_id".into()),
            user_id: Some("user_id".into()),
            session_id: Some("session_id".into()),
            group_id: Some("group_id".into()),
            previous_id: Some("previous_id".into()),
            page_url: Some("page_url".into()),
            page_path: Some("page_path".into()),
            page_title: Some("page_title".into()),
            page_referrer: Some("page_referrer".into()),
            referrer_host: Some("referrer_host".into()),
            utm: [
                Some("utm_source".into()),
                Some("utm_medium".into()),
                Some("utm_campaign".into()),
                Some("utm_term".into()),
                Some("utm_content".into()),
            ],
            agent: Some(Arc::new(crate::enrich::UserAgentInfo {
                text: "user_agent".into(),
                browser: Some("browser".into()),
                os: Some("os".into()),
                device_type: "device_type",
                is_bot: true,
            })),
            ip: Some("ip".into()),
            locale: Some("locale".into()),
            properties: Some("properties".into()),
            traits: Some("traits".into()),
            context: Some("context".into()),
            event_date: 4,
        };
        let batch = to_record_batch(&[event]);
        assert_eq!(batch.num_rows(), 1);
        // Each optional text column holds its own name, which proves the order.
        for name in &COLUMNS[7..COLUMNS.len() - 1] {
            let column = batch.column_by_name(name).unwrap();
            if *name == "is_bot" {
                let flags = column.as_any().downcast_ref::<BooleanArray>().unwrap();
                assert!(flags.value(0));
                continue;
            }
            let text = column.as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!(text.value(0), *name);
            assert!(!text.is_null(0));
        }
    }

    #[test]
    fn text_columns_are_allocated_at_their_exact_size() {
        let meta = crate::RequestMeta::new(1_700_000_000_000_000, "web", 7);
        let body = format!(
            r#"{{"batch":[{}]}}"#,
            (0..50)
                .map(|i| {
                    format!(
                        r#"{{"type":"page","messageId":"id-{i}","anonymousId":"a{i}","name":"n",
                        "properties":{{"url":"https://example.com/{}"}},
                        "context":{{"userAgent":"Mozilla/5.0 {}"}}}}"#,
                        "p".repeat(i),
                        "x".repeat(3 * i)
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        let events = crate::decode(&meta, crate::Endpoint::Batch, body.as_bytes()).unwrap();
        let batch = to_record_batch(&events);
        assert_eq!(batch.num_rows(), 50);
        let mut checked = 0;
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let Some(text) = column.as_any().downcast_ref::<StringArray>() else {
                continue;
            };
            let values = text.values();
            // Buffers round their allocation up to a multiple of 64 bytes, no more.
            assert!(
                values.capacity() < values.len() + 64,
                "{}: {} bytes of text in {} allocated",
                field.name(),
                values.len(),
                values.capacity()
            );
            checked += 1;
        }
        assert_eq!(checked, 1 + 1 + 1 + 1 + OPTIONAL_TEXT_COLUMNS);
    }
}
