//! PostHog's capture API (`/e`, `/i/v0/e`, `/capture`, `/batch`), mapped onto the canonical
//! event by translating each PostHog event into Segment's shape.
//!
//! Bodies come as one event object, an array of events, or `{"batch": [...]}` with `api_key`
//! and `sent_at` beside it; browsers may wrap them in a form field `data=` as base64 or
//! LZ-String ([`unwrap_body`]). The project key comes from `api_key`, `token`, or an event's
//! `properties.token`.
//!
//! Mapping (`properties` keep everything not moved into a column):
//!
//! | PostHog | canonical |
//! |---|---|
//! | `$pageview` | `type = page`, page fields from `$current_url`, `$pathname`, `title`, `$referrer` |
//! | `$screen` | `type = screen`, `event = $screen_name` |
//! | `$identify` | `type = identify`, `user_id = distinct_id`, `anonymous_id = $anon_distinct_id`, `traits = $set` |
//! | `$create_alias` | `type = alias`, `user_id = properties.alias`, `previous_id = distinct_id` |
//! | `$groupidentify` | `type = group`, `group_id = $group_key`, `traits = $group_set` |
//! | anything else | `type = track`, `event` = the name |
//!
//! `distinct_id` is the user id, unless the event says the person is not identified
//! (`$is_identified: false`, or `distinct_id` equals `$device_id`): then it is the anonymous id.
//! `uuid` is the message id; `timestamp` with `sent_at` gets the usual clock-skew correction;
//! `offset` (milliseconds before sending) stands in for a missing `timestamp`.

use base64::Engine;
use serde_json::{Map, Value};
use url::form_urlencoded;

use crate::error::{DecodeError, Result};
use crate::lzstring;
use crate::segment::{ParsedBody, RawEvent};
use crate::{MAX_BATCH_BYTES, MAX_EVENT_BYTES};

/// The largest `offset` accepted (200 years, in milliseconds); posthog-js sends the age of
/// back-dated events here, and the result must still fall after 1900, which is checked later.
const MAX_OFFSET_MS: i64 = 200 * 366 * 24 * 3600 * 1000;

/// How a PostHog body is wrapped, from `?compression=` (gzip is undone before this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Base64,
    Lz64,
}

impl Compression {
    /// Reads `?compression=`; `gzip`/`gzip-js` are handled by the caller like
    /// `Content-Encoding: gzip`, so they map to `None` here.
    pub fn from_query(value: Option<&str>) -> std::result::Result<Self, DecodeError> {
        match value.unwrap_or("") {
            "" | "gzip" | "gzip-js" => Ok(Compression::None),
            "base64" => Ok(Compression::Base64),
            "lz64" => Ok(Compression::Lz64),
            other => Err(DecodeError::invalid(
                "compression",
                format!("unknown compression {other:?}; expected gzip-js, base64 or lz64"),
            )),
        }
    }
}

/// Turns what posthog-js posts into plain JSON text: a form body `data=<payload>` (or a `data`
/// query parameter, given as `form_data`) is taken out and decoded as base64 or LZ-String.
/// The result is at most `limit` bytes.
pub fn unwrap_body(
    body: &[u8],
    form_data: Option<&str>,
    compression: Compression,
    limit: usize,
) -> Result<Vec<u8>> {
    let form_field;
    let payload: &[u8] = match form_data {
        Some(data) => data.as_bytes(),
        None if body.starts_with(b"data=") => {
            form_field = form_urlencoded::parse(body)
                .find(|(key, _)| key == "data")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            form_field.as_bytes()
        }
        None => body,
    };
    let trimmed = payload.trim_ascii();
    let looks_like_json = trimmed.starts_with(b"{") || trimmed.starts_with(b"[");
    let out = match compression {
        Compression::Lz64 => {
            let text = std::str::from_utf8(trimmed)
                .map_err(|_| DecodeError::invalid("body", "lz64 data is not text"))?;
            lzstring::decompress_from_base64(text, limit)
                .map_err(|err| match err {
                    lzstring::LzError::TooLarge => too_large(limit),
                    lzstring::LzError::Invalid => {
                        DecodeError::invalid("body", "data is not valid lz64 (LZ-String base64)")
                    }
                })?
                .into_bytes()
        }
        Compression::None if looks_like_json => trimmed.to_vec(),
        // posthog-js sends `data=` base64 when asked for base64, and old versions without saying.
        Compression::Base64 | Compression::None => {
            if trimmed.len() / 4 * 3 > limit + 3 {
                return Err(too_large(limit));
            }
            let cleaned: Vec<u8> = trimmed
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(&cleaned)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&cleaned))
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&cleaned))
                .map_err(|_| {
                    DecodeError::invalid("body", "data is neither JSON nor valid base64")
                })?
        }
    };
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

fn too_large(limit: usize) -> DecodeError {
    DecodeError::EventTooLarge {
        location: "body".into(),
        size: limit + 1,
        limit,
    }
}

/// Parses a PostHog body (plain JSON) into Segment-shaped events.
pub(crate) fn parse(body: &[u8]) -> Result<ParsedBody> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(too_large(MAX_BATCH_BYTES));
    }
    let root: Value =
        serde_json::from_slice(body).map_err(|err| DecodeError::InvalidJson(err.to_string()))?;
    let (items, envelope) = match root {
        Value::Array(items) => (items, Map::new()),
        Value::Object(mut map) => match map.remove("batch") {
            Some(Value::Array(items)) => (items, map),
            Some(_) => return Err(DecodeError::invalid("body", "\"batch\" must be an array")),
            None => (vec![Value::Object(map)], Map::new()),
        },
        _ => {
            return Err(DecodeError::invalid(
                "body",
                "expected an event object, an array of events or {\"batch\": [...]}",
            ));
        }
    };
    if items.is_empty() {
        return Err(DecodeError::EmptyBatch);
    }
    let mut write_key = key_of(&envelope, "body")?;
    let sent_at = envelope.get("sent_at").cloned().filter(|v| !v.is_null());
    let single = items.len() == 1;
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let location = if single {
            "event".to_owned()
        } else {
            format!("batch[{index}]")
        };
        let Value::Object(object) = item else {
            return Err(DecodeError::invalid(
                &location,
                "event must be a JSON object",
            ));
        };
        let size = serde_json::to_vec(&object).map_or(0, |v| v.len());
        if size > MAX_EVENT_BYTES {
            return Err(DecodeError::EventTooLarge {
                location,
                size,
                limit: MAX_EVENT_BYTES,
            });
        }
        let own_key = key_of(&object, &location)?.or(key_of(
            object
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&Map::new()),
            &location,
        )?);
        match (&write_key, own_key) {
            (_, None) => {}
            (None, Some(key)) => write_key = Some(key),
            (Some(known), Some(key)) if *known == key => {}
            (Some(_), Some(_)) => {
                return Err(DecodeError::invalid(
                    &location,
                    "events of one request must carry the same project api key",
                ));
            }
        }
        events.push(translate(location, object)?);
    }
    Ok(ParsedBody {
        events,
        batch_events: None,
        implied_type: None,
        batch_context: None,
        batch_sent_at: sent_at,
        write_key,
    })
}

/// `api_key` or `token` of an object.
fn key_of(object: &Map<String, Value>, location: &str) -> Result<Option<String>> {
    for field in ["api_key", "token"] {
        match object.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(key)) if key.is_empty() => {}
            Some(Value::String(key)) => return Ok(Some(key.clone())),
            Some(_) => {
                return Err(DecodeError::invalid(
                    location,
                    format!("\"{field}\" must be a string"),
                ));
            }
        }
    }
    Ok(None)
}

fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// One PostHog event as a Segment message.
fn translate(location: String, mut event: Map<String, Value>) -> Result<RawEvent> {
    let name = match event.remove("event") {
        Some(Value::String(name)) if !name.is_empty() => name,
        None | Some(Value::Null) => {
            return Err(DecodeError::invalid(&location, "\"event\" is required"));
        }
        Some(Value::String(_)) => {
            return Err(DecodeError::invalid(
                &location,
                "\"event\" must not be empty",
            ));
        }
        Some(_) => {
            return Err(DecodeError::invalid(
                &location,
                "\"event\" must be a string",
            ));
        }
    };
    let mut properties = match event.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(DecodeError::invalid(
                &location,
                "\"properties\" must be an object",
            ));
        }
    };
    for key in ["token", "api_key", "distinct_id"] {
        // distinct_id is read below from either place; the token is a credential.
        if key != "distinct_id" {
            properties.remove(key);
        }
    }
    let distinct_id = id_text(event.get("distinct_id"))
        .or_else(|| id_text(event.get("$distinct_id")))
        .or_else(|| id_text(properties.get("distinct_id")));
    properties.remove("distinct_id");
    let device_id = id_text(properties.get("$device_id"));
    let anon_distinct_id = id_text(properties.get("$anon_distinct_id"));
    let identified = match properties.get("$is_identified") {
        Some(Value::Bool(false)) => false,
        _ => distinct_id.is_some() && distinct_id != device_id,
    };
    let (user_id, anonymous_id) = if identified {
        (distinct_id, anon_distinct_id.or(device_id))
    } else {
        (None, distinct_id.or(device_id))
    };

    let mut message = Map::new();
    let kind = match name.as_str() {
        "$pageview" => "page",
        "$screen" => "screen",
        "$identify" => "identify",
        "$create_alias" => "alias",
        "$groupidentify" => "group",
        _ => "track",
    };
    message.insert("type".into(), kind.into());
    match kind {
        "track" => {
            message.insert("event".into(), Value::String(name));
        }
        "screen" => {
            if let Some(screen) = properties.get("$screen_name").cloned() {
                message.insert("name".into(), screen);
            }
        }
        "alias" => {}
        "group" => {
            if let Some(key) = id_text(properties.get("$group_key")) {
                message.insert("groupId".into(), Value::String(key));
            }
            if let Some(Value::Object(set)) = properties.remove("$group_set") {
                message.insert("traits".into(), Value::Object(set));
            }
        }
        _ => {}
    }
    // `$create_alias`: `alias` is the id the person goes by from now on, `distinct_id` the one
    // they had; Segment's alias says the same with userId and previousId.
    let (user_id, anonymous_id) = if kind == "alias" {
        let previous = user_id.or(anonymous_id);
        if let Some(previous) = previous {
            message.insert("previousId".into(), Value::String(previous));
        }
        (id_text(properties.get("alias")), None)
    } else {
        (user_id, anonymous_id)
    };
    if let Some(id) = user_id {
        message.insert("userId".into(), Value::String(id));
    }
    if let Some(id) = anonymous_id {
        message.insert("anonymousId".into(), Value::String(id));
    }
    if let Some(uuid) = id_text(event.get("uuid")) {
        message.insert("messageId".into(), Value::String(uuid));
    }
    if let Some(timestamp) = event.remove("timestamp").filter(|v| !v.is_null()) {
        message.insert("timestamp".into(), timestamp);
    }
    let offset_ms = match event.get("offset") {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => Some(
            number
                .as_i64()
                .filter(|offset| (0..=MAX_OFFSET_MS).contains(offset))
                .ok_or_else(|| {
                    DecodeError::invalid(
                        &location,
                        "\"offset\" must be a non-negative number of milliseconds",
                    )
                })?,
        ),
        Some(_) => {
            return Err(DecodeError::invalid(
                &location,
                "\"offset\" must be a number",
            ));
        }
    };

    // Person properties are the traits: `$set` (and `$set_once` under it), at the top of the
    // event (posthog-js identify, posthog-python set) or inside the properties.
    if !message.contains_key("traits") {
        let mut traits = Map::new();
        for key in ["$set_once", "$set"] {
            for source in [event.remove(key), properties.remove(key)] {
                if let Some(Value::Object(set)) = source {
                    traits.extend(set);
                }
            }
        }
        if !traits.is_empty() {
            message.insert("traits".into(), Value::Object(traits));
        }
    }

    let mut context = Map::new();
    let mut page = Map::new();
    for (from, to) in [
        ("$current_url", "url"),
        ("$pathname", "path"),
        ("title", "title"),
        ("$referrer", "referrer"),
    ] {
        if let Some(Value::String(text)) = properties.get(from)
            && !text.is_empty()
            && text != "$direct"
        {
            page.insert(to.into(), Value::String(text.clone()));
        }
    }
    if !page.is_empty() {
        context.insert("page".into(), Value::Object(page));
    }
    let mut campaign = Map::new();
    for (from, to) in [
        ("utm_source", "source"),
        ("utm_medium", "medium"),
        ("utm_campaign", "name"),
        ("utm_term", "term"),
        ("utm_content", "content"),
    ] {
        if let Some(value @ Value::String(_)) = properties.get(from) {
            campaign.insert(to.into(), value.clone());
        }
    }
    if !campaign.is_empty() {
        context.insert("campaign".into(), Value::Object(campaign));
    }
    // The IP moves into the context so the source's IP policy governs every copy of it.
    if let Some(ip) = properties.remove("$ip").filter(|v| v.is_string()) {
        context.insert("ip".into(), ip);
    }
    for (from, to) in [
        ("$raw_user_agent", "userAgent"),
        ("$browser_language", "locale"),
        ("$session_id", "sessionId"),
    ] {
        if let Some(value @ Value::String(_)) = properties.get(from) {
            context.insert(to.into(), value.clone());
        }
    }
    if let Some(lib) = properties.get("$lib").filter(|v| v.is_string()) {
        let mut library = Map::new();
        library.insert("name".into(), lib.clone());
        if let Some(version) = properties.get("$lib_version").filter(|v| v.is_string()) {
            library.insert("version".into(), version.clone());
        }
        context.insert("library".into(), Value::Object(library));
    }
    if !context.is_empty() {
        message.insert("context".into(), Value::Object(context));
    }
    if !properties.is_empty() {
        message.insert("properties".into(), Value::Object(properties));
    }
    Ok(RawEvent {
        location,
        object: message,
        offset_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{EventType, RequestMeta};
    use url::form_urlencoded;

    fn meta() -> RequestMeta {
        RequestMeta::new(1_704_164_645_000_000, "app", 7)
    }

    fn events(body: &str) -> Vec<crate::Event> {
        parse(body.as_bytes())
            .unwrap()
            .into_events(&meta())
            .unwrap()
    }

    #[test]
    fn maps_posthog_events_onto_the_canonical_event() {
        let body = r#"{"api_key": "phc_k", "sent_at": "2024-01-02T04:04:05Z", "batch": [
            {"event": "$pageview", "distinct_id": "dev1", "uuid": "u-1",
             "timestamp": "2024-01-02T04:04:00Z",
             "properties": {"$device_id": "dev1", "$current_url": "https://a.example/p?utm_source=x",
                            "$pathname": "/p", "$referrer": "$direct", "title": "P", "$ip": "198.51.100.4"}},
            {"event": "clicked", "distinct_id": "user-9", "properties": {"$device_id": "dev1", "color": "red"}},
            {"event": "$identify", "distinct_id": "user-9", "$set": {"email": "a@b.c"},
             "properties": {"$anon_distinct_id": "dev1"}},
            {"event": "$create_alias", "distinct_id": "old-1", "properties": {"alias": "user-9"}},
            {"event": "$groupidentify", "distinct_id": "user-9",
             "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"size": 5}}},
            {"event": "$screen", "distinct_id": "user-9", "offset": 1500, "properties": {"$screen_name": "Home"}}
        ]}"#;
        let parsed = parse(body.as_bytes()).unwrap();
        assert_eq!(parsed.write_key(), Some("phc_k"));
        let events = parsed.into_events(&meta()).unwrap();
        let page = &events[0];
        assert_eq!(page.kind, Some(EventType::Page));
        assert_eq!(page.anonymous_id.as_deref(), Some("dev1"));
        assert_eq!(page.user_id, None);
        assert_eq!(page.message_id, "u-1");
        assert_eq!(page.page_path.as_deref(), Some("/p"));
        assert_eq!(page.page_title.as_deref(), Some("P"));
        assert_eq!(page.page_referrer, None);
        assert_eq!(page.utm[0].as_deref(), Some("x"));
        assert_eq!(page.ip.as_deref(), Some("198.51.100.4"));
        // Client clock one hour ahead.
        assert_eq!(page.timestamp, 1_704_164_640_000_000);
        let track = &events[1];
        assert_eq!(track.kind, Some(EventType::Track));
        assert_eq!(track.event.as_deref(), Some("clicked"));
        assert_eq!(track.user_id.as_deref(), Some("user-9"));
        assert_eq!(track.anonymous_id.as_deref(), Some("dev1"));
        assert!(
            track
                .properties
                .as_deref()
                .unwrap()
                .contains("\"color\":\"red\"")
        );
        let identify = &events[2];
        assert_eq!(identify.kind, Some(EventType::Identify));
        assert_eq!(identify.anonymous_id.as_deref(), Some("dev1"));
        assert_eq!(identify.traits.as_deref(), Some(r#"{"email":"a@b.c"}"#));
        assert_eq!(events[3].kind, Some(EventType::Alias));
        assert_eq!(events[3].previous_id.as_deref(), Some("old-1"));
        assert_eq!(events[3].user_id.as_deref(), Some("user-9"));
        assert_eq!(events[4].kind, Some(EventType::Group));
        assert_eq!(events[4].group_id.as_deref(), Some("acme"));
        assert_eq!(events[5].kind, Some(EventType::Screen));
        assert_eq!(events[5].event.as_deref(), Some("Home"));
        assert_eq!(events[5].timestamp, meta().received_at_micros - 1_500_000);
    }

    #[test]
    fn single_events_arrays_and_tokens() {
        let single =
            events(r#"{"event": "x", "properties": {"distinct_id": "d", "token": "phc_t"}}"#);
        assert_eq!(single[0].user_id.as_deref(), Some("d"));
        assert!(single[0].properties.is_none());
        let parsed =
            parse(br#"[{"event": "x", "distinct_id": "d", "properties": {"token": "phc_t"}}]"#)
                .unwrap();
        assert_eq!(parsed.write_key(), Some("phc_t"));
        for (body, expected) in [
            (r#"[]"#, "batch is empty"),
            (r#"[{"distinct_id": "d"}]"#, "\"event\" is required"),
            (
                r#"[{"event": "x"}]"#,
                "either \"userId\" or \"anonymousId\"",
            ),
            (
                r#"[{"event": "x", "distinct_id": "d", "api_key": "a"}, {"event": "y", "distinct_id": "d", "api_key": "b"}]"#,
                "same project api key",
            ),
            (
                r#"{"event": "x", "distinct_id": "d", "offset": -1}"#,
                "\"offset\"",
            ),
            (r#"7"#, "expected an event object"),
        ] {
            let message = match parse(body.as_bytes()) {
                Err(err) => err.to_string(),
                Ok(parsed) => parsed.into_events(&meta()).unwrap_err().to_string(),
            };
            assert!(message.contains(expected), "{body}: {message}");
        }
    }

    #[test]
    fn unwraps_form_base64_and_lz64_bodies() {
        let json = r#"[{"event":"x","distinct_id":"d"}]"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        let form = format!("data={}", urlencode(&b64));
        assert_eq!(
            unwrap_body(form.as_bytes(), None, Compression::Base64, 1000).unwrap(),
            json.as_bytes()
        );
        assert_eq!(
            unwrap_body(b"", Some(&b64), Compression::None, 1000).unwrap(),
            json.as_bytes()
        );
        let lz = lz_str::compress_to_base64(json);
        let form = format!("data={}", urlencode(&lz));
        assert_eq!(
            unwrap_body(form.as_bytes(), None, Compression::Lz64, 1000).unwrap(),
            json.as_bytes()
        );
        assert_eq!(
            unwrap_body(json.as_bytes(), None, Compression::None, 1000).unwrap(),
            json.as_bytes()
        );
        assert!(unwrap_body(b"data=%%%", None, Compression::Base64, 1000).is_err());
        assert!(unwrap_body(b"data=!!", None, Compression::Lz64, 1000).is_err());
        let bomb = lz_str::compress_to_base64("a".repeat(50_000).as_str());
        assert!(
            unwrap_body(bomb.as_bytes(), None, Compression::Lz64, 1000)
                .unwrap_err()
                .is_too_large()
        );
        assert!(Compression::from_query(Some("brotli")).is_err());
    }

    fn urlencode(text: &str) -> String {
        form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }
}
