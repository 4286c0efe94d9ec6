//! Segment's HTTP tracking API: `/v1/batch` and the single-event calls
//! (`track`, `page`, `screen`, `identify`, `group`, `alias`).
//!
//! A batch is accepted or rejected whole: if any event in it is invalid the request gets a 400
//! naming the first bad event (`batch[3]: ...`) and nothing of it is stored. Segment's SDKs drop
//! a batch on any 400 without retrying, so a partial accept could not be reported to them
//! anyway, and an all-or-nothing rule keeps a batch one WAL record with one outcome.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::enrich::{self, IpPolicy, UserAgentInfo};
use crate::error::{DecodeError, Result};
use crate::time::{MAX_MICROS, MIN_MICROS, micros_to_days, parse_iso8601_micros};
use crate::{MAX_BATCH_BYTES, MAX_EVENT_BYTES};

/// Largest total of batch-level `context` bytes copied into the events of one batch (the
/// context's size times the number of events).
const MAX_BATCH_CONTEXT_COPIES: usize = 4 * MAX_BATCH_BYTES;

/// The Segment call a body was posted to. Stored in WAL records, hence the stable codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Batch,
    Single(EventType),
    /// PostHog's capture API (`/e`, `/batch`, `/capture`, `/i/v0/e`); the stored body is the
    /// JSON after any compression and form encoding were undone.
    PostHog,
}

impl Endpoint {
    /// Stable one-byte code, as stored in the WAL.
    pub fn code(self) -> u8 {
        match self {
            Endpoint::Batch => 0,
            Endpoint::Single(kind) => 1 + kind as u8,
            Endpoint::PostHog => 16,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Endpoint::Batch),
            16 => Some(Endpoint::PostHog),
            _ => EventType::ALL
                .get(usize::from(code) - 1)
                .copied()
                .map(Endpoint::Single),
        }
    }

    /// Largest body this endpoint accepts, after decompression.
    pub fn max_body_bytes(self) -> usize {
        match self {
            Endpoint::Batch | Endpoint::PostHog => MAX_BATCH_BYTES,
            Endpoint::Single(_) => MAX_EVENT_BYTES,
        }
    }
}

/// The six Segment call types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventType {
    Track = 0,
    Page = 1,
    Screen = 2,
    Identify = 3,
    Group = 4,
    Alias = 5,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::Track,
        EventType::Page,
        EventType::Screen,
        EventType::Identify,
        EventType::Group,
        EventType::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Identify => "identify",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// What the ingest service observed about a request, beyond its body. Stored in the WAL
/// beside the body so that a replay decodes to the same rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMeta {
    /// When the request arrived, microseconds since the Unix epoch (UTC).
    pub received_at_micros: i64,
    /// The source the write key belongs to.
    pub source: String,
    /// The client's IP address as seen by the server (socket or trusted proxy header), with
    /// the source's IP policy already applied.
    pub client_ip: Option<String>,
    /// Random id of the request; message ids for events that lack one derive from it.
    pub request_id: u128,
    /// The request's `User-Agent` header: the client's user agent when an event names none
    /// (browsers' beacons and pixels do not).
    pub user_agent: Option<String>,
    /// The source's IP policy, applied to IPs the events carry themselves (`context.ip`).
    pub ip_policy: IpPolicy,
    /// The cookieless visitor id, for sources that enable it: the anonymous id of events that
    /// carry neither a user id nor an anonymous id. Computed at receive time (its salt changes
    /// daily), so it is stored rather than recomputed on replay.
    pub visitor_id: Option<String>,
}

impl RequestMeta {
    /// Metadata with only the essentials; the rest at its defaults.
    pub fn new(received_at_micros: i64, source: impl Into<String>, request_id: u128) -> Self {
        Self {
            received_at_micros,
            source: source.into(),
            client_ip: None,
            request_id,
            user_agent: None,
            ip_policy: IpPolicy::Keep,
            visitor_id: None,
        }
    }
}

/// One canonical event: a row of the `events` table before it becomes Arrow, owning its text
/// (WAL replay, tools, tests). The request path's [`EventRow`] with nothing borrowed.
pub type Event = EventRow<'static>;

/// One row of the `events` table whose text may still be borrowed from the request body: what
/// the ingest path turns into Arrow, so each field is copied once, into its column, rather than
/// first into a `String` of its own (allocating and freeing ~15 of those per event was 6% of
/// the server's CPU at full load). [`Event`] is the owned form (WAL replay, tools, tests).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventRow<'a> {
    pub message_id: Cow<'a, str>,
    pub kind: Option<EventType>,
    pub event: Option<Cow<'a, str>>,
    pub timestamp: i64,
    pub received_at: i64,
    pub sent_at: Option<i64>,
    pub source: Cow<'a, str>,
    pub anonymous_id: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub session_id: Option<Cow<'a, str>>,
    pub group_id: Option<Cow<'a, str>>,
    pub previous_id: Option<Cow<'a, str>>,
    pub page_url: Option<Cow<'a, str>>,
    pub page_path: Option<Cow<'a, str>>,
    pub page_title: Option<Cow<'a, str>>,
    pub page_referrer: Option<Cow<'a, str>>,
    pub referrer_host: Option<Cow<'a, str>>,
    pub utm: [Option<Cow<'a, str>>; 5],
    /// The user agent (`user_agent`) and what it says (`browser`, `os`, `device_type`,
    /// `is_bot`), shared by every event with the same one.
    pub agent: Option<Arc<UserAgentInfo>>,
    pub ip: Option<Cow<'a, str>>,
    pub locale: Option<Cow<'a, str>>,
    pub properties: Option<Cow<'a, str>>,
    pub traits: Option<Cow<'a, str>>,
    pub context: Option<Cow<'a, str>>,
    /// Days since the epoch of `timestamp` (the partition).
    pub event_date: i32,
}

impl EventRow<'_> {
    /// The row with its text copied out of whatever it borrowed from.
    pub fn into_owned(self) -> Event {
        fn own(value: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(value.into_owned())
        }
        let text = |value: Option<Cow<'_, str>>| value.map(own);
        EventRow {
            message_id: own(self.message_id),
            kind: self.kind,
            event: text(self.event),
            timestamp: self.timestamp,
            received_at: self.received_at,
            sent_at: self.sent_at,
            source: own(self.source),
            anonymous_id: text(self.anonymous_id),
            user_id: text(self.user_id),
            session_id: text(self.session_id),
            group_id: text(self.group_id),
            previous_id: text(self.previous_id),
            page_url: text(self.page_url),
            page_path: text(self.page_path),
            page_title: text(self.page_title),
            page_referrer: text(self.page_referrer),
            referrer_host: text(self.referrer_host),
            utm: self.utm.map(text),
            agent: self.agent,
            ip: text(self.ip),
            locale: text(self.locale),
            properties: text(self.properties),
            traits: text(self.traits),
            context: text(self.context),
            event_date: self.event_date,
        }
    }
}

#[derive(Deserialize)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    context: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
    integrations: Option<Value>,
}

/// A request body that parsed as JSON of the right overall shape, not yet validated event by
/// event. Separate from [`ParsedBody::into_events`] so the caller can authenticate with a
/// `writeKey` from the body before the events are built for that source.
pub struct ParsedBody {
    pub(crate) events: Vec<RawEvent>,
    /// The events of a Segment batch, as text (`events` is empty then); each is decoded by
    /// [`crate::borrowed`] when it can be and parsed into a tree only when it cannot.
    pub(crate) batch_events: Option<EventTexts>,
    pub(crate) implied_type: Option<EventType>,
    pub(crate) batch_context: Option<Map<String, Value>>,
    pub(crate) batch_sent_at: Option<Value>,
    pub(crate) write_key: Option<String>,
}

/// The texts of a batch's events, one after another in one string.
#[derive(Default)]
pub(crate) struct EventTexts {
    text: String,
    ends: Vec<usize>,
}

impl EventTexts {
    fn push(&mut self, event: &str) {
        self.text.push_str(event);
        self.ends.push(self.text.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.text[start..end])
    }
}

/// One event of a body in Segment's shape, not yet validated.
pub(crate) struct RawEvent {
    /// Where it sits in the body, for error messages (`batch[3]`).
    pub location: String,
    pub object: Map<String, Value>,
    /// PostHog's `offset`: the event happened this many milliseconds before it was received.
    pub offset_ms: Option<i64>,
}

impl RawEvent {
    pub(crate) fn new(location: String, object: Map<String, Value>) -> Self {
        Self {
            location,
            object,
            offset_ms: None,
        }
    }
}

impl ParsedBody {
    pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Self> {
        let body = &*replace_lone_surrogates(body);
        match endpoint {
            Endpoint::Batch => Self::parse_batch(body),
            Endpoint::PostHog => crate::posthog::parse(body),
            Endpoint::Single(kind) => {
                if body.len() > MAX_EVENT_BYTES {
                    return Err(DecodeError::EventTooLarge {
                        location: kind.as_str().to_owned(),
                        size: body.len(),
                        limit: MAX_EVENT_BYTES,
                    });
                }
                let object = parse_object(body, kind.as_str())?;
                let write_key = string_field(&object, "writeKey", "body")?;
                Ok(Self {
                    events: vec![RawEvent::new(kind.as_str().to_owned(), object)],
                    batch_events: None,
                    implied_type: Some(kind),
                    batch_context: None,
                    batch_sent_at: None,
                    write_key,
                })
            }
        }
    }

    fn parse_batch(body: &[u8]) -> Result<Self> {
        let envelope: BatchEnvelope<'_> = serde_json::from_slice(body)
            .map_err(|err| DecodeError::InvalidJson(err.to_string()))?;
        let raw_events = envelope
            .batch
            .ok_or_else(|| DecodeError::invalid("body", "\"batch\" array is required"))?;
        if raw_events.is_empty() {
            return Err(DecodeError::EmptyBatch);
        }
        let mut events = EventTexts {
            text: String::with_capacity(body.len()),
            ends: Vec::with_capacity(raw_events.len()),
        };
        for (index, raw) in raw_events.into_iter().enumerate() {
            let text = raw.get();
            if text.len() > MAX_EVENT_BYTES {
                return Err(DecodeError::EventTooLarge {
                    location: format!("batch[{index}]"),
                    size: text.len(),
                    limit: MAX_EVENT_BYTES,
                });
            }
            // The envelope's parse validated the JSON; what is left to check is the shape.
            if !text.starts_with('{') {
                return Err(DecodeError::invalid(
                    &format!("batch[{index}]"),
                    "event must be a JSON object",
                ));
            }
            events.push(text);
        }
        let mut batch_context = match envelope.context {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => {
                return Err(DecodeError::invalid(
                    "body",
                    "\"context\" must be an object",
                ));
            }
        };
        // Batch-level integrations travel with the batch context, where each event's own
        // `integrations` are merged over them (see `build_event`). A value that is not an
        // object is ignored rather than refused: earlier releases accepted it into the WAL,
        // and replay must never be stricter than ingest.
        if let Some(Value::Object(map)) = envelope.integrations {
            batch_context
                .get_or_insert_with(Map::new)
                .insert("integrations".into(), Value::Object(map));
        }
        // The batch context is copied into every event: bound the total so a large context
        // times many small events cannot turn one body into gigabytes.
        if let Some(context) = &batch_context {
            let size = serde_json::to_vec(context).map_or(0, |v| v.len());
            if size.saturating_mul(events.len()) > MAX_BATCH_CONTEXT_COPIES {
                return Err(DecodeError::EventTooLarge {
                    location: "context".into(),
                    size: size.saturating_mul(events.len()),
                    limit: MAX_BATCH_CONTEXT_COPIES,
                });
            }
        }
        let write_key = match envelope.write_key {
            None | Some(Value::Null) => None,
            Some(Value::String(key)) => Some(key),
            Some(_) => {
                return Err(DecodeError::invalid(
                    "body",
                    "\"writeKey\" must be a string",
                ));
            }
        };
        Ok(Self {
            events: Vec::new(),
            batch_events: Some(events),
            implied_type: None,
            batch_context,
            batch_sent_at: envelope.sent_at,
            write_key,
        })
    }

    /// The `writeKey` the body carries, if any.
    pub fn write_key(&self) -> Option<&str> {
        self.write_key.as_deref()
    }

    /// Number of events in the body.
    pub fn len(&self) -> usize {
        match &self.batch_events {
            Some(texts) => texts.len(),
            None => self.events.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Validates every event and builds the canonical rows; fails on the first bad event.
    pub fn into_events(self, meta: &RequestMeta) -> Result<Vec<Event>> {
        self.into_events_with(meta, true)
    }

    /// [`ParsedBody::into_events`], with the fast decoder of [`crate::borrowed`] allowed or not
    /// (tests compare the two).
    pub(crate) fn into_events_with(mut self, meta: &RequestMeta, fast: bool) -> Result<Vec<Event>> {
        let rows = self.rows_with(meta, fast)?;
        Ok(rows.into_iter().map(EventRow::into_owned).collect())
    }

    /// Like [`ParsedBody::into_events`], but the rows borrow from the body (and `meta`) where
    /// they can: the events of a Segment batch, decoded by [`crate::borrowed`], copy nothing
    /// that the body holds as it is stored. Decodes once: the events of a body that is not a
    /// Segment batch (single calls, PostHog) are moved out, so a second call finds none.
    pub fn rows<'a>(&'a mut self, meta: &'a RequestMeta) -> Result<Vec<EventRow<'a>>> {
        self.rows_with(meta, true)
    }

    fn rows_with<'a>(&'a mut self, meta: &'a RequestMeta, fast: bool) -> Result<Vec<EventRow<'a>>> {
        let batch_sent_at = optional_timestamp(self.batch_sent_at.as_ref(), "body", "sentAt")?;
        let mut out = Vec::with_capacity(self.len());
        let events = std::mem::take(&mut self.events);
        let this: &'a ParsedBody = self;
        if let Some(texts) = &this.batch_events {
            // A batch-level context is merged into every event: only the general decoder does.
            let fast = fast && this.batch_context.is_none();
            for (index, text) in texts.iter().enumerate() {
                let decoded = fast
                    .then(|| crate::borrowed::decode(meta, index, text, batch_sent_at))
                    .flatten();
                let row = match decoded {
                    Some(row) => row,
                    None => {
                        let location = format!("batch[{index}]");
                        let object = parse_object(text.as_bytes(), &location)?;
                        build_event(
                            meta,
                            index,
                            RawEvent::new(location, object),
                            None,
                            this.batch_context.as_ref(),
                            batch_sent_at,
                        )?
                    }
                };
                out.push(row);
            }
            return Ok(out);
        }
        for (index, raw) in events.into_iter().enumerate() {
            out.push(build_event(
                meta,
                index,
                raw,
                this.implied_type,
                this.batch_context.as_ref(),
                batch_sent_at,
            )?);
        }
        Ok(out)
    }
}

/// The body with every client-reported IP (`context.ip` of the batch and of each event;
/// PostHog's `properties.$ip`) rewritten by `policy`, so that what the policy removes never
/// reaches the WAL. `None` when nothing needed changing (always for [`IpPolicy::Keep`]).
/// Decoding applies the policy again, which changes nothing the second time, so replaying the
/// rewritten body gives the rows the original gave.
pub fn scrub_body_ips(endpoint: Endpoint, body: &[u8], policy: IpPolicy) -> Option<Vec<u8>> {
    if policy == IpPolicy::Keep || !body.windows(3).any(|w| w == b"\"ip" || w == b"$ip") {
        return None;
    }
    let mut root: Value = serde_json::from_slice(&replace_lone_surrogates(body)).ok()?;
    let mut changed = false;
    let mut scrub = |object: &mut Map<String, Value>, key: &str| {
        if let Some(Value::String(ip)) = object.get(key) {
            match policy.apply(ip) {
                Some(kept) if &kept == ip => {}
                Some(kept) => {
                    object.insert(key.to_owned(), Value::String(kept));
                    changed = true;
                }
                None => {
                    object.remove(key);
                    changed = true;
                }
            }
        }
    };
    let events: Vec<&mut Value> = match (&mut root, endpoint) {
        (Value::Array(items), Endpoint::PostHog) => items.iter_mut().collect(),
        (Value::Object(map), Endpoint::Batch | Endpoint::PostHog) if map.contains_key("batch") => {
            if let Some(Value::Object(context)) = map.get_mut("context") {
                scrub(context, "ip");
            }
            match map.get_mut("batch") {
                Some(Value::Array(items)) => items.iter_mut().collect(),
                _ => Vec::new(),
            }
        }
        (value @ Value::Object(_), _) => vec![value],
        _ => Vec::new(),
    };
    for event in events {
        let Value::Object(event) = event else {
            continue;
        };
        for holder in ["context", "properties"] {
            if let Some(Value::Object(inner)) = event.get_mut(holder) {
                scrub(inner, if holder == "context" { "ip" } else { "$ip" });
            }
        }
    }
    changed.then(|| serde_json::to_vec(&root).expect("a JSON value serializes"))
}

/// `body` with every lone UTF-16 surrogate escape (`\ud83d` without the low half after it, or a
/// low half alone) replaced by `\ufffd`, the replacement character; borrowed when it has none.
///
/// JSON's grammar allows such escapes, and `JSON.stringify` writes one for a string cut inside
/// an emoji (a page title shortened by a script, say), but they name no Unicode character:
/// serde_json refuses them where it decodes a string and lets them pass where it skips one. So
/// before this, the same event was stored or refused (400, which SDKs do not retry) depending on
/// which decoder read it. Every decoder now reads the body with them replaced, and accepts it.
/// The WAL keeps the body as sent; replaying it replaces the same escapes again.
pub(crate) fn replace_lone_surrogates(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let unit = |at: usize| -> Option<u16> {
        let hex = body.get(at..at + 4)?;
        hex.iter().all(u8::is_ascii_hexdigit).then(|| {
            hex.iter().fold(0, |unit, &digit| {
                unit << 4 | (char::from(digit).to_digit(16).unwrap_or(0) as u16)
            })
        })
    };
    let high = |unit: u16| (0xD800..0xDC00).contains(&unit);
    let low = |unit: u16| (0xDC00..0xE000).contains(&unit);
    let mut out: Option<Vec<u8>> = None;
    // `copied` is where the part not yet copied to `out` starts.
    let (mut at, mut copied) = (0, 0);
    while let Some(found) = memchr::memchr(b'\\', body.get(at..).unwrap_or_default()) {
        let escape = at + found;
        // Past the backslash and the character it escapes, unless a `\u` escape says otherwise.
        at = escape + 2;
        if body.get(escape + 1) != Some(&b'u') {
            continue;
        }
        let Some(first) = unit(escape + 2) else {
            continue;
        };
        at = escape + 6;
        let paired = high(first)
            && body.get(escape + 6..escape + 8) == Some(b"\\u")
            && unit(escape + 8).is_some_and(low);
        if paired {
            at = escape + 12;
        } else if high(first) || low(first) {
            let out = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
            out.extend_from_slice(&body[copied..escape]);
            out.extend_from_slice(b"\\ufffd");
            copied = at;
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(body),
        Some(mut out) => {
            out.extend_from_slice(&body[copied..]);
            std::borrow::Cow::Owned(out)
        }
    }
}

/// Decodes a whole body for `meta.source`: the pure function the WAL replay relies on.
pub fn decode(meta: &RequestMeta, endpoint: Endpoint, body: &[u8]) -> Result<Vec<Event>> {
    ParsedBody::parse(endpoint, body)?.into_events(meta)
}

/// Decodes one stored Segment message, e.g. a line of an NDJSON export being imported. Unlike
/// a live request, the receive time is the message's own `receivedAt` when it has one, so
/// historical events keep their time (and skew correction uses the original receive time).
/// Without `receivedAt`, `sentAt` is ignored and the event's `timestamp` stands as given.
/// `meta.request_id` seeds the message id of a message that lacks one.
pub fn decode_stored(meta: &RequestMeta, location: &str, message: &[u8]) -> Result<Event> {
    if message.len() > MAX_EVENT_BYTES {
        return Err(DecodeError::EventTooLarge {
            location: location.to_owned(),
            size: message.len(),
            limit: MAX_EVENT_BYTES,
        });
    }
    let mut object = parse_object(&replace_lone_surrogates(message), location)?;
    let mut meta = meta.clone();
    match optional_timestamp(object.get("receivedAt"), location, "receivedAt")? {
        Some(received) => meta.received_at_micros = received,
        None => {
            object.remove("sentAt");
        }
    }
    build_event(
        &meta,
        0,
        RawEvent::new(location.to_owned(), object),
        None,
        None,
        None,
    )
}

fn parse_object(bytes: &[u8], location: &str) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(DecodeError::invalid(
            location,
            "event must be a JSON object",
        )),
        Err(err) => Err(DecodeError::InvalidJson(format!("{location}: {err}"))),
    }
}

/// A string field; numbers are accepted and kept as their decimal text (some SDKs send numeric
/// user ids); an empty string counts as absent.
fn string_field(object: &Map<String, Value>, key: &str, location: &str) -> Result<Option<String>> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => Err(DecodeError::invalid(
            location,
            format!("\"{key}\" must be a string"),
        )),
    }
}

fn object_field<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    location: &str,
) -> Result<Option<&'a Map<String, Value>>> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(DecodeError::invalid(
            location,
            format!("\"{key}\" must be an object"),
        )),
    }
}

fn optional_timestamp(value: Option<&Value>, location: &str, key: &str) -> Result<Option<i64>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let micros = parse_iso8601_micros(text).ok_or_else(|| {
                DecodeError::invalid(
                    location,
                    format!("\"{key}\" is not an ISO-8601 timestamp: {text:?}"),
                )
            })?;
            if !(MIN_MICROS..=MAX_MICROS).contains(&micros) {
                return Err(DecodeError::invalid(
                    location,
                    format!("\"{key}\" is outside the years 1900 to 9999: {text:?}"),
                ));
            }
            Ok(Some(micros))
        }
        Some(_) => Err(DecodeError::invalid(
            location,
            format!("\"{key}\" must be an ISO-8601 timestamp string"),
        )),
    }
}

fn nested_str<'a>(object: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a str> {
    match object?.get(key)? {
        Value::String(text) if !text.is_empty() => Some(text),
        _ => None,
    }
}

fn build_event(
    meta: &RequestMeta,
    index: usize,
    raw: RawEvent,
    implied_type: Option<EventType>,
    batch_context: Option<&Map<String, Value>>,
    batch_sent_at: Option<i64>,
) -> Result<Event> {
    let RawEvent {
        location,
        mut object,
        offset_ms,
    } = raw;
    let location = location.as_str();
    let kind = match implied_type {
        Some(kind) => kind,
        None => match object.get("type") {
            Some(Value::String(text)) => EventType::parse(text).ok_or_else(|| {
                DecodeError::invalid(
                    location,
                    format!(
                        "unknown \"type\" {text:?}; expected track, page, screen, identify, group or alias"
                    ),
                )
            })?,
            None | Some(Value::Null) => {
                return Err(DecodeError::invalid(location, "\"type\" is required"));
            }
            Some(_) => return Err(DecodeError::invalid(location, "\"type\" must be a string")),
        },
    };

    let user_id = string_field(&object, "userId", location)?;
    let mut anonymous_id = string_field(&object, "anonymousId", location)?;
    if user_id.is_none() && anonymous_id.is_none() {
        anonymous_id = meta.visitor_id.clone();
    }
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(DecodeError::invalid(
            location,
            "either \"userId\" or \"anonymousId\" is required",
        ));
    }
    let event_name = match kind {
        EventType::Track => Some(
            string_field(&object, "event", location)?
                .ok_or_else(|| DecodeError::invalid(location, "track call requires \"event\""))?,
        ),
        EventType::Page | EventType::Screen => string_field(&object, "name", location)?,
        _ => None,
    };
    let group_id = string_field(&object, "groupId", location)?;
    if kind == EventType::Group && group_id.is_none() {
        return Err(DecodeError::invalid(
            location,
            "group call requires \"groupId\"",
        ));
    }
    let previous_id = string_field(&object, "previousId", location)?;
    if kind == EventType::Alias && previous_id.is_none() {
        return Err(DecodeError::invalid(
            location,
            "alias call requires \"previousId\"",
        ));
    }
    let message_id = match string_field(&object, "messageId", location)? {
        Some(id) => id,
        None => uuid::Uuid::from_u128(meta.request_id.wrapping_add(index as u128)).to_string(),
    };

    let client_timestamp = match optional_timestamp(object.get("timestamp"), location, "timestamp")?
    {
        Some(ts) => Some(ts),
        None => optional_timestamp(
            object.get("originalTimestamp"),
            location,
            "originalTimestamp",
        )?,
    };
    let sent_at = optional_timestamp(object.get("sentAt"), location, "sentAt")?.or(batch_sent_at);
    // Clock-skew correction: the client's clock is off by (sent_at - received_at), so shift the
    // event time by the same amount. Without a client timestamp the receive time is the best
    // estimate of when the event happened.
    let timestamp = match (client_timestamp, sent_at, offset_ms) {
        // Both inputs are range-checked, so this cannot overflow; the result is checked again.
        (Some(ts), Some(sent), _) => meta.received_at_micros - (sent - ts),
        (Some(ts), None, _) => ts,
        // PostHog's offset is relative to the receive time already; it is capped when parsed.
        (None, _, Some(offset)) => meta.received_at_micros - offset * 1000,
        (None, _, None) => meta.received_at_micros,
    };
    if !(MIN_MICROS..=MAX_MICROS).contains(&timestamp) {
        return Err(DecodeError::invalid(
            location,
            "\"timestamp\" corrected for clock skew (received_at - (sentAt - timestamp)) is outside the years 1900 to 9999",
        ));
    }

    // Checked in this order so the first bad field named is the same as ever.
    for key in ["properties", "traits", "context", "integrations"] {
        object_field(&object, key, location)?;
    }
    // The event's own context is moved out rather than copied: it is most of the event.
    let event_context = match object.remove("context") {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    let properties = object_field(&object, "properties", location)?;
    let traits = object_field(&object, "traits", location)?;
    let integrations = object_field(&object, "integrations", location)?;

    // Batch-level context is the default for every event; keys the event sets win.
    let mut context: Option<Map<String, Value>> = match (batch_context, event_context) {
        (None, None) => None,
        (Some(base), None) => Some(base.clone()),
        (None, Some(own)) => Some(own),
        (Some(base), Some(own)) => {
            let mut merged = base.clone();
            merged.extend(own);
            Some(merged)
        }
    };
    // Which destinations the client asked for: kept in the context as `integrations`, the
    // event's own keys over the batch's.
    if let Some(own) = integrations {
        let context = context.get_or_insert_with(Map::new);
        let mut merged = match context.remove("integrations") {
            Some(Value::Object(base)) => base,
            _ => Map::new(),
        };
        merged.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        context.insert("integrations".into(), Value::Object(merged));
    }
    // The IP policy covers addresses the client reports itself (server-side SDKs forward their
    // visitor's), and the copy inside the stored context.
    let ip = nested_str(context.as_ref(), "ip")
        .or(meta.client_ip.as_deref())
        .and_then(|ip| meta.ip_policy.apply(ip));
    if let Some(context) = context.as_mut()
        && context.contains_key("ip")
    {
        match &ip {
            Some(kept) => context.insert("ip".into(), Value::String(kept.clone())),
            None => context.remove("ip"),
        };
    }
    let context_ref = context.as_ref();
    let page = context_ref
        .and_then(|c| c.get("page"))
        .and_then(Value::as_object);
    let campaign = context_ref
        .and_then(|c| c.get("campaign"))
        .and_then(Value::as_object);
    // A page call describes the page in its properties; other calls in context.page.
    let page_field = |key: &str| -> Option<&str> {
        let from_properties = if kind == EventType::Page {
            nested_str(properties, key)
        } else {
            None
        };
        from_properties.or_else(|| nested_str(page, key))
    };
    let to_json = |map: Option<&Map<String, Value>>| {
        map.map(|m| serde_json::to_string(m).expect("a JSON map always serializes"))
    };
    let owned = |text: Option<String>| text.map(Cow::Owned);
    fn borrowed(text: Option<&str>) -> Option<Cow<'_, str>> {
        text.map(Cow::Borrowed)
    }
    let fields = Fields {
        kind,
        message_id: Cow::Owned(message_id),
        event_name: owned(event_name),
        timestamp,
        sent_at,
        anonymous_id: owned(anonymous_id),
        user_id: owned(user_id),
        group_id: owned(group_id),
        previous_id: owned(previous_id),
        page_url: borrowed(page_field("url")),
        page_path: borrowed(page_field("path")),
        page_title: borrowed(page_field("title")),
        page_referrer: borrowed(page_field("referrer")),
        campaign: CAMPAIGN_KEYS.map(|key| borrowed(nested_str(campaign, key))),
        user_agent: borrowed(nested_str(context_ref, "userAgent")),
        session_id: borrowed(nested_str(context_ref, "sessionId")),
        locale: borrowed(nested_str(context_ref, "locale")),
        ip: owned(ip),
        properties: owned(to_json(properties)),
        traits: owned(to_json(traits).or_else(|| {
            to_json(
                context_ref
                    .and_then(|c| c.get("traits"))
                    .and_then(Value::as_object),
            )
        })),
        context: owned(to_json(context_ref)),
    };
    Ok(fields.assemble(meta).into_owned())
}

/// The keys of `context.campaign`, in the order of the `utm_*` columns.
pub(crate) const CAMPAIGN_KEYS: [&str; 5] = ["source", "medium", "name", "term", "content"];

/// What both decoders (the general one above and [`crate::borrowed`]) take from one event:
/// validated, with the batch context and IP policy applied. [`Fields::assemble`] derives the
/// rest (URL path, referrer host, UTM tags, user agent details) the same way for both.
pub(crate) struct Fields<'a> {
    pub kind: EventType,
    pub message_id: Cow<'a, str>,
    pub event_name: Option<Cow<'a, str>>,
    pub timestamp: i64,
    pub sent_at: Option<i64>,
    pub anonymous_id: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub group_id: Option<Cow<'a, str>>,
    pub previous_id: Option<Cow<'a, str>>,
    pub page_url: Option<Cow<'a, str>>,
    pub page_path: Option<Cow<'a, str>>,
    pub page_title: Option<Cow<'a, str>>,
    pub page_referrer: Option<Cow<'a, str>>,
    /// `context.campaign`, in [`CAMPAIGN_KEYS`] order.
    pub campaign: [Option<Cow<'a, str>>; 5],
    pub user_agent: Option<Cow<'a, str>>,
    pub session_id: Option<Cow<'a, str>>,
    pub locale: Option<Cow<'a, str>>,
    /// After the IP policy.
    pub ip: Option<Cow<'a, str>>,
    pub properties: Option<Cow<'a, str>>,
    pub traits: Option<Cow<'a, str>>,
    pub context: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    pub(crate) fn assemble(self, meta: &'a RequestMeta) -> EventRow<'a> {
        let page_path = match self.page_path {
            Some(path) => Some(path),
            None => self
                .page_url
                .as_deref()
                .and_then(enrich::url_path)
                .map(Cow::Owned),
        };
        let referrer_host = self
            .page_referrer
            .as_deref()
            .and_then(enrich::referrer_host)
            .map(Cow::Owned);
        let mut utm = self
            .page_url
            .as_deref()
            .map(enrich::utm_from_url)
            .unwrap_or_default()
            .map(|value| value.map(Cow::Owned));
        for (slot, value) in utm.iter_mut().zip(self.campaign) {
            if let Some(value) = value {
                *slot = Some(value);
            }
        }
        let agent = self
            .user_agent
            .as_deref()
            .or(meta.user_agent.as_deref())
            .map(enrich::user_agent);
        EventRow {
            message_id: self.message_id,
            kind: Some(self.kind),
            event: self.event_name,
            timestamp: self.timestamp,
            received_at: meta.received_at_micros,
            sent_at: self.sent_at,
            source: Cow::Borrowed(&meta.source),
            anonymous_id: self.anonymous_id,
            user_id: self.user_id,
            session_id: self.session_id,
            group_id: self.group_id,
            previous_id: self.previous_id,
            page_url: self.page_url,
            page_path,
            page_title: self.page_title,
            page_referrer: self.page_referrer,
            referrer_host,
            utm,
            agent,
            ip: self.ip,
            locale: self.locale,
            properties: self.properties,
            traits: self.traits,
            context: self.context,
            event_date: micros_to_days(self.timestamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RequestMeta {
        RequestMeta {
            client_ip: Some("192.0.2.7".into()),
            // 2024-01-02T03:04:05Z
            ..RequestMeta::new(1_704_164_645_000_000, "web", 42)
        }
    }

    fn decode_err(endpoint: Endpoint, body: &str) -> String {
        decode(&meta(), endpoint, body.as_bytes())
            .expect_err("should be rejected")
            .to_string()
    }

    #[test]
    fn lone_surrogate_escapes_are_replaced_and_pairs_kept() {
        for (body, expected) in [
            (r#""a\ud83d""#, r#""a\ufffd""#),
            (r#""\uDC00x\ud83d\ude00""#, r#""\ufffdx\ud83d\ude00""#),
            (r#""\ud83d\ud83d\ude00""#, r#""\ufffd\ud83d\ude00""#),
            (
                r#""\\ud83d \u00e9 \ud7ff \ue000""#,
                r#""\\ud83d \u00e9 \ud7ff \ue000""#,
            ),
            (r#""\ud83d\u""#, r#""\ufffd\u""#),
            (r#""\u+d80 \ud8"#, r#""\u+d80 \ud8"#),
            ("\\", "\\"),
            ("\\u", "\\u"),
        ] {
            let replaced = replace_lone_surrogates(body.as_bytes());
            assert_eq!(std::str::from_utf8(&replaced).unwrap(), expected, "{body}");
        }
        assert!(matches!(
            replace_lone_surrogates(br#"{"a":"\u00e9\ud83d\ude00"}"#),
            std::borrow::Cow::Borrowed(_)
        ));
        // Every endpoint accepts them now, each decoder alike.
        let event =
            r#"{"type":"track","event":"E\ud83d","userId":"u","properties":{"title":"ab\ud83d"}}"#;
        let single = decode(
            &meta(),
            Endpoint::Single(EventType::Track),
            event.as_bytes(),
        )
        .unwrap();
        assert_eq!(single[0].event.as_deref(), Some("E\u{fffd}"));
        let batch = format!(r#"{{"batch":[{event}],"context":{{"locale":"de"}}}}"#);
        assert_eq!(
            decode(&meta(), Endpoint::Batch, batch.as_bytes()).unwrap()[0].event,
            single[0].event
        );
    }

    #[test]
    fn endpoint_codes_round_trip() {
        for endpoint in
            std::iter::once(Endpoint::Batch).chain(EventType::ALL.into_iter().map(Endpoint::Single))
        {
            assert_eq!(Endpoint::from_code(endpoint.code()), Some(endpoint));
        }
        assert_eq!(Endpoint::from_code(7), None);
    }

    #[test]
    fn decodes_a_batch_with_context_merge_and_skew() {
        let body = r#"{
            "batch": [
                {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m1",
                 "timestamp": "2024-01-02T04:04:00Z", "properties": {"plan": "pro"},
                 "context": {"locale": "de-DE"}},
                {"type": "page", "anonymousId": "a1", "name": "Home",
                 "properties": {"url": "https://shop.example/home?utm_source=news", "referrer": "https://www.google.com/"}}
            ],
            "context": {"ip": "203.0.113.9", "locale": "en-US"},
            "sentAt": "2024-01-02T04:04:05Z"
        }"#;
        let events = decode(&meta(), Endpoint::Batch, body.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        let track = &events[0];
        assert_eq!(track.kind, Some(EventType::Track));
        assert_eq!(track.event.as_deref(), Some("Signed Up"));
        assert_eq!(track.message_id, "m1");
        // Client clock one hour ahead: sent 04:04:05 but received 03:04:05, so the event at
        // 04:04:00 really happened at 03:04:00.
        assert_eq!(track.timestamp, 1_704_164_640_000_000);
        assert_eq!(track.locale.as_deref(), Some("de-DE"));
        assert_eq!(track.ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(track.properties.as_deref(), Some(r#"{"plan":"pro"}"#));
        let page = &events[1];
        assert_eq!(page.event.as_deref(), Some("Home"));
        assert_eq!(page.page_path.as_deref(), Some("/home"));
        assert_eq!(page.referrer_host.as_deref(), Some("google.com"));
        assert_eq!(page.utm[0].as_deref(), Some("news"));
        assert_eq!(page.locale.as_deref(), Some("en-US"));
        // No client timestamp: receive time.
        assert_eq!(page.timestamp, meta().received_at_micros);
        assert_eq!(page.message_id, uuid::Uuid::from_u128(43).to_string());
    }

    #[test]
    fn rejects_bad_events_with_their_location() {
        let cases = [
            (Endpoint::Batch, "{", "invalid JSON"),
            (Endpoint::Batch, r#"{"batch": []}"#, "batch is empty"),
            (
                Endpoint::Batch,
                r#"{"nope": 1}"#,
                "\"batch\" array is required",
            ),
            (
                Endpoint::Batch,
                r#"{"batch": [{"type": "track", "event": "x", "userId": "u"}, {"type": "track", "userId": "u"}]}"#,
                "batch[1]: track call requires \"event\"",
            ),
            (
                Endpoint::Single(EventType::Track),
                r#"{"event": "x"}"#,
                "either \"userId\" or \"anonymousId\" is required",
            ),
            (
                Endpoint::Single(EventType::Track),
                r#"{"event": "x", "userId": "u", "timestamp": 42}"#,
                "\"timestamp\" must be an ISO-8601 timestamp string",
            ),
            (
                Endpoint::Single(EventType::Identify),
                r#"{"userId": "u", "traits": [1]}"#,
                "\"traits\" must be an object",
            ),
            (
                Endpoint::Batch,
                r#"{"batch": [{"type": "purchase", "userId": "u"}]}"#,
                "unknown \"type\"",
            ),
            (
                Endpoint::Single(EventType::Page),
                "[1]",
                "event must be a JSON object",
            ),
            (
                Endpoint::Single(EventType::Track),
                r#"{"event": "x", "userId": "u", "timestamp": "1800-01-01T00:00:00Z"}"#,
                "outside the years 1900 to 9999",
            ),
            (
                Endpoint::Single(EventType::Track),
                r#"{"event": "x", "userId": "u", "timestamp": "9999-12-31T00:00:00Z", "sentAt": "1900-01-01T00:00:00Z"}"#,
                "corrected for clock skew",
            ),
        ];
        for (endpoint, body, expected) in cases {
            let message = decode_err(endpoint, body);
            assert!(message.contains(expected), "{body}: {message}");
        }
    }

    #[test]
    fn rejects_an_oversize_event_inside_a_batch() {
        let big = "x".repeat(MAX_EVENT_BYTES);
        let body = format!(
            r#"{{"batch": [{{"type": "track", "event": "e", "userId": "u", "properties": {{"p": "{big}"}}}}]}}"#
        );
        let err = decode(&meta(), Endpoint::Batch, body.as_bytes()).unwrap_err();
        assert!(err.is_too_large(), "{err}");
        assert!(err.to_string().starts_with("batch[0]"), "{err}");
    }

    #[test]
    fn batch_integrations_merge_into_each_event() {
        let body = br#"{"batch": [
            {"type": "track", "event": "a", "userId": "u", "integrations": {"Mixpanel": false}},
            {"type": "track", "event": "b", "userId": "u"}
        ], "integrations": {"All": true, "Mixpanel": true}}"#;
        let events = decode(&meta(), Endpoint::Batch, body).unwrap();
        let integrations = |event: &Event| -> Value {
            serde_json::from_str::<Value>(event.context.as_deref().unwrap()).unwrap()["integrations"]
                .clone()
        };
        assert_eq!(
            integrations(&events[0]),
            serde_json::json!({"All": true, "Mixpanel": false})
        );
        assert_eq!(
            integrations(&events[1]),
            serde_json::json!({"All": true, "Mixpanel": true})
        );
    }

    #[test]
    fn ip_policy_rewrites_the_stored_body_and_replays_the_same() {
        let body = br#"{"batch": [{"type": "track", "event": "e", "userId": "u", "context": {"ip": "198.51.100.7"}}],
                        "context": {"ip": "203.0.113.9"}}"#;
        let meta = RequestMeta {
            ip_policy: IpPolicy::Truncate,
            ..meta()
        };
        let scrubbed = scrub_body_ips(Endpoint::Batch, body, IpPolicy::Truncate).unwrap();
        let text = String::from_utf8(scrubbed.clone()).unwrap();
        assert!(
            !text.contains("198.51.100.7") && !text.contains("203.0.113.9"),
            "{text}"
        );
        assert_eq!(
            decode(&meta, Endpoint::Batch, body).unwrap(),
            decode(&meta, Endpoint::Batch, &scrubbed).unwrap()
        );
        let ph = br#"[{"event": "x", "distinct_id": "d", "properties": {"$ip": "198.51.100.7"}}]"#;
        let dropped = scrub_body_ips(Endpoint::PostHog, ph, IpPolicy::Drop).unwrap();
        assert!(!String::from_utf8(dropped).unwrap().contains("198.51"));
        assert_eq!(scrub_body_ips(Endpoint::Batch, body, IpPolicy::Keep), None);
    }

    #[test]
    fn decoding_is_deterministic() {
        let body = br#"{"batch": [{"type": "identify", "userId": "u", "traits": {"a": 1}}]}"#;
        assert_eq!(
            decode(&meta(), Endpoint::Batch, body).unwrap(),
            decode(&meta(), Endpoint::Batch, body).unwrap()
        );
    }
}
