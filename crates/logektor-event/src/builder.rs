//! Canonical [`Event`]s into Arrow record batches of [`events_schema`].

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::record_batch::RecordBatch;

use crate::schema::events_schema;
use crate::segment::Event;

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

impl Default for EventBatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl EventBatchBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        let timestamp = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        Self {
            message_id: StringBuilder::with_capacity(rows, rows * 36),
            kind: StringBuilder::with_capacity(rows, rows * 5),
            event: StringBuilder::with_capacity(rows, rows * 16),
            timestamp: timestamp(),
            received_at: timestamp(),
            sent_at: timestamp(),
            source: StringBuilder::with_capacity(rows, rows * 8),
            optional_text: (0..OPTIONAL_TEXT_COLUMNS)
                .map(|_| StringBuilder::with_capacity(rows, rows * 16))
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

    pub fn append(&mut self, event: &Event) {
        self.message_id.append_value(&event.message_id);
        self.kind
            .append_option(event.kind.map(|kind| kind.as_str()));
        self.event.append_option(event.event.as_deref());
        self.timestamp.append_value(event.timestamp);
        self.received_at.append_value(event.received_at);
        self.sent_at.append_option(event.sent_at);
        self.source.append_value(&event.source);
        let [utm_source, utm_medium, utm_campaign, utm_term, utm_content] = &event.utm;
        // Order must match schema::COLUMNS between "anonymous_id" and "context", without is_bot.
        let before_bot: [&Option<String>; 19] = [
            &event.anonymous_id,
            &event.user_id,
            &event.session_id,
            &event.group_id,
            &event.previous_id,
            &event.page_url,
            &event.page_path,
            &event.page_title,
            &event.page_referrer,
            &event.referrer_host,
            utm_source,
            utm_medium,
            utm_campaign,
            utm_term,
            utm_content,
            &event.user_agent,
            &event.browser,
            &event.os,
            &event.device_type,
        ];
        let after_bot: [&Option<String>; 5] = [
            &event.ip,
            &event.locale,
            &event.properties,
            &event.traits,
            &event.context,
        ];
        let values = before_bot.iter().chain(after_bot.iter());
        for (builder, value) in self.optional_text.iter_mut().zip(values) {
            builder.append_option(value.as_deref());
        }
        self.is_bot.append_option(event.is_bot);
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
        columns.extend(text.by_ref().take(19));
        columns.push(Arc::new(self.is_bot.finish()));
        columns.extend(text);
        columns.push(Arc::new(self.event_date.finish()));
        RecordBatch::try_new(events_schema(), columns)
            .expect("the builder produces exactly the events schema")
    }
}

/// Builds one record batch from a slice of events.
pub fn to_record_batch(events: &[Event]) -> RecordBatch {
    let mut builder = EventBatchBuilder::with_capacity(events.len());
    for event in events {
        builder.append(event);
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::COLUMNS;
    use crate::segment::EventType;
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
            user_agent: Some("user_agent".into()),
            browser: Some("browser".into()),
            os: Some("os".into()),
            device_type: Some("device_type".into()),
            is_bot: Some(true),
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
}
