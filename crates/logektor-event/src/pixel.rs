//! The tracking pixel: `GET /pixel/v1/{track,page}?...` query parameters to a Segment message.
//!
//! Parameters: `event` (track, required) or `name` (page); `userId`, `anonymousId`,
//! `messageId`, `timestamp`; `url`, `title`, `referrer` (the page; `url` defaults to the
//! `Referer` header); `properties.NAME=value` for properties (strings). `writeKey` is read by
//! the caller. Empty values count as absent.

use serde_json::{Map, Value, json};

use crate::error::{DecodeError, Result};
use crate::segment::EventType;

/// Builds the Segment message a pixel request stands for, as JSON bytes ready for
/// [`crate::segment::ParsedBody::parse`] with `Endpoint::Single(kind)`.
pub fn message(
    kind: EventType,
    params: &[(String, String)],
    referer: Option<&str>,
) -> Result<Vec<u8>> {
    if !matches!(kind, EventType::Track | EventType::Page) {
        return Err(DecodeError::invalid(
            "pixel",
            "a pixel is a track or a page",
        ));
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.clone())
    };
    let mut message = Map::new();
    if kind == EventType::Track {
        let event = get("event")
            .ok_or_else(|| DecodeError::invalid("event", "a track pixel needs ?event=<name>"))?;
        message.insert("event".into(), Value::String(event));
    } else if let Some(name) = get("name") {
        message.insert("name".into(), Value::String(name));
    }
    for field in ["userId", "anonymousId", "messageId", "timestamp"] {
        if let Some(value) = get(field) {
            message.insert(field.into(), Value::String(value));
        }
    }
    let mut properties = Map::new();
    for (name, value) in params {
        if let Some(property) = name.strip_prefix("properties.")
            && !property.is_empty()
        {
            properties.insert(property.to_owned(), Value::String(value.clone()));
        }
    }
    let mut page = Map::new();
    if let Some(url) = get("url").or_else(|| referer.map(str::to_owned)) {
        page.insert("url".into(), Value::String(url));
    }
    for field in ["title", "referrer"] {
        if let Some(value) = get(field) {
            page.insert(field.into(), Value::String(value));
        }
    }
    let mut context = Map::new();
    if kind == EventType::Page {
        properties.extend(page);
    } else if !page.is_empty() {
        context.insert("page".into(), Value::Object(page));
    }
    context.insert(
        "library".into(),
        json!({"name": "logektor-pixel", "version": env!("CARGO_PKG_VERSION")}),
    );
    message.insert("context".into(), Value::Object(context));
    if !properties.is_empty() {
        message.insert("properties".into(), Value::Object(properties));
    }
    Ok(serde_json::to_vec(&message).expect("a JSON map serializes"))
}
