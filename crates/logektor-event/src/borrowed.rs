//! The fast decoder for events of a Segment batch: fields are read straight from the body's
//! text, borrowed where they have no escapes, and `properties`, `traits` and `context` are
//! stored as the client sent them (with insignificant whitespace removed) rather than parsed
//! into a tree and serialized again.
//!
//! It covers the common case only and answers `None` for anything else: a batch-level context
//! to merge, a field of an unexpected type, a duplicate key, an IP the source's policy would
//! change, or any invalid event. The caller then decodes that event with the general decoder in
//! [`crate::segment`], which gives the same rows (the JSON columns as equivalent JSON, with
//! sorted keys) and the error messages. So the two can never disagree on what is accepted, and
//! the differential test below and the fuzz target hold them to the same rows.
//!
//! Decoding stays a pure function of the body: the same body always takes the same path, so a
//! WAL replay stores the very text that was acknowledged.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::Event;
use crate::segment::{EventType, Fields, RequestMeta};
use crate::time::{MAX_MICROS, MIN_MICROS, parse_iso8601_micros};

/// One event of a batch, as far as the fast decoder reads it. Keys it does not name are
/// skipped (and validated as JSON) without being built.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    #[serde(rename = "userId", borrow)]
    user_id: Option<Text<'a>>,
    #[serde(rename = "anonymousId", borrow)]
    anonymous_id: Option<Text<'a>>,
    #[serde(borrow)]
    event: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(rename = "groupId", borrow)]
    group_id: Option<Text<'a>>,
    #[serde(rename = "previousId", borrow)]
    previous_id: Option<Text<'a>>,
    #[serde(rename = "messageId", borrow)]
    message_id: Option<Text<'a>>,
    #[serde(borrow)]
    timestamp: Option<Text<'a>>,
    #[serde(rename = "originalTimestamp", borrow)]
    original_timestamp: Option<Text<'a>>,
    #[serde(rename = "sentAt", borrow)]
    sent_at: Option<Text<'a>>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    traits: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    integrations: Option<&'a RawValue>,
}

/// The parts of `context` that become columns.
#[derive(Deserialize, Default)]
struct Context<'a> {
    #[serde(default, borrow)]
    page: IfObject<Page<'a>>,
    #[serde(default, borrow)]
    campaign: IfObject<Campaign<'a>>,
    #[serde(rename = "userAgent", default, borrow)]
    user_agent: Lenient<'a>,
    #[serde(default, borrow)]
    locale: Lenient<'a>,
    #[serde(rename = "sessionId", default, borrow)]
    session_id: Lenient<'a>,
    /// Present even when `null`: the general decoder replaces any `ip` key it finds.
    #[serde(default, borrow, deserialize_with = "present_raw")]
    ip: Option<&'a RawValue>,
    #[serde(borrow)]
    traits: Option<&'a RawValue>,
    #[serde(default)]
    integrations: Present,
}

/// `properties` of a page call, or `context.page`.
#[derive(Deserialize, Default)]
struct Page<'a> {
    #[serde(default, borrow)]
    url: Lenient<'a>,
    #[serde(default, borrow)]
    path: Lenient<'a>,
    #[serde(default, borrow)]
    title: Lenient<'a>,
    #[serde(default, borrow)]
    referrer: Lenient<'a>,
}

/// `context.campaign`, in the order of [`crate::segment::CAMPAIGN_KEYS`].
#[derive(Deserialize, Default)]
struct Campaign<'a> {
    #[serde(default, borrow)]
    source: Lenient<'a>,
    #[serde(default, borrow)]
    medium: Lenient<'a>,
    #[serde(default, borrow)]
    name: Lenient<'a>,
    #[serde(default, borrow)]
    term: Lenient<'a>,
    #[serde(default, borrow)]
    content: Lenient<'a>,
}

/// A JSON string, borrowed from the input unless it had escapes. Anything else is an error,
/// which sends the event to the general decoder (that accepts numbers as ids, for one).
struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    /// The text, or `None` when empty (an empty id counts as absent).
    fn non_empty(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(&*self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A non-empty string or nothing: any other value (a number, an object, `null`) reads as
/// absent, as the general decoder's `nested_str` does.
#[derive(Default)]
struct Lenient<'a>(Option<Cow<'a, str>>);

impl Lenient<'_> {
    fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenientVisitor;
        impl<'de> Visitor<'de> for LenientVisitor {
            type Value = Lenient<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Lenient<'de>, E> {
                Ok(Lenient((!v.is_empty()).then_some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Lenient<'de>, E> {
                Ok(Lenient((!v.is_empty()).then(|| Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lenient<'de>, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Lenient<'de>, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Lenient<'de>, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Lenient<'de>, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Lenient<'de>, E> {
                Ok(Lenient(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Lenient<'de>, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lenient<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        deserializer.deserialize_any(LenientVisitor)
    }
}

/// `T` read from an object; any other value (the general decoder ignores a `context.page` that
/// is not an object) reads as `T::default()`.
#[derive(Default)]
struct IfObject<T>(T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for IfObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for ObjectVisitor<T> {
            type Value = IfObject<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<IfObject<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(IfObject)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IfObject<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IfObject(T::default()))
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<IfObject<T>, E> {
                Ok(IfObject(T::default()))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<IfObject<T>, E> {
                Ok(IfObject(T::default()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<IfObject<T>, E> {
                Ok(IfObject(T::default()))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<IfObject<T>, E> {
                Ok(IfObject(T::default()))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<IfObject<T>, E> {
                Ok(IfObject(T::default()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<IfObject<T>, E> {
                Ok(IfObject(T::default()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<IfObject<T>, E> {
                Ok(IfObject(T::default()))
            }
            fn visit_none<E: de::Error>(self) -> Result<IfObject<T>, E> {
                Ok(IfObject(T::default()))
            }
        }
        deserializer.deserialize_any(ObjectVisitor(std::marker::PhantomData))
    }
}

/// Whether a key was there at all, whatever its value.
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Present(true))
    }
}

/// A raw value that counts as present even when it is `null`.
fn present_raw<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// An object-valued key: `Some(Some(text))` for an object, `Some(None)` when absent, `None`
/// (take the general decoder) for any other value, which is an error there.
fn object(raw: Option<&RawValue>) -> Option<Option<&str>> {
    match raw {
        None => Some(None),
        Some(raw) if raw.get().starts_with('{') => Some(Some(raw.get())),
        Some(_) => None,
    }
}

/// `raw` read as `T` when it is an object, `T::default()` when it is absent or not an object
/// (the general decoder ignores a `context.page` that is not an object); `None` when it does
/// not read as `T`, e.g. a duplicate key.
fn nested<'a, T: Deserialize<'a> + Default>(raw: Option<&'a RawValue>) -> Option<T> {
    match raw {
        Some(raw) if raw.get().starts_with('{') => serde_json::from_str(raw.get()).ok(),
        _ => Some(T::default()),
    }
}

fn timestamp(text: Option<&Text<'_>>) -> Option<Option<i64>> {
    let Some(text) = text else {
        return Some(None);
    };
    let micros = parse_iso8601_micros(&text.0)?;
    (MIN_MICROS..=MAX_MICROS)
        .contains(&micros)
        .then_some(Some(micros))
}

/// `raw` without whitespace between tokens; borrowed when it has none, as SDKs send it.
/// `raw` must be valid JSON (it comes from a [`RawValue`]).
pub(crate) fn compact(raw: &str) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    // `copied` is where the part not yet copied to `out` starts.
    let (mut at, mut copied) = (0, 0);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => at = string_end(bytes, at + 1),
            b' ' | b'\n' | b'\r' | b'\t' => {
                let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                out.extend_from_slice(&bytes[copied..at]);
                at += 1;
                copied = at;
            }
            _ => at += 1,
        }
    }
    match out {
        None => Cow::Borrowed(raw),
        Some(mut out) => {
            out.extend_from_slice(&bytes[copied..]);
            // Only ASCII whitespace outside strings was dropped, so this is still UTF-8.
            Cow::Owned(String::from_utf8(out).expect("removing ASCII whitespace keeps UTF-8"))
        }
    }
}

/// Index just past the closing quote of the string whose text starts at `at`.
fn string_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(found) = memchr::memchr2(b'"', b'\\', bytes.get(at..).unwrap_or_default()) {
        at += found;
        if bytes[at] == b'"' {
            return at + 1;
        }
        // An escape: skip the backslash and the character it escapes.
        at += 2;
    }
    bytes.len()
}

/// Decodes event `index` of a batch without a batch-level context, or `None` to leave it to the
/// general decoder.
pub(crate) fn decode(
    meta: &RequestMeta,
    index: usize,
    text: &str,
    batch_sent_at: Option<i64>,
) -> Option<Event> {
    let message: Message<'_> = serde_json::from_str(text).ok()?;
    let kind = EventType::parse(&message.kind?.0)?;
    let user_id = message.user_id.as_ref().and_then(Text::non_empty);
    let mut anonymous_id = message
        .anonymous_id
        .as_ref()
        .and_then(Text::non_empty)
        .map(str::to_owned);
    if user_id.is_none() && anonymous_id.is_none() {
        anonymous_id = Some(meta.visitor_id.clone()?);
    }
    let field =
        |text: &Option<Text<'_>>| text.as_ref().and_then(Text::non_empty).map(str::to_owned);
    let event_name = match kind {
        EventType::Track => Some(field(&message.event)?),
        EventType::Page | EventType::Screen => field(&message.name),
        _ => None,
    };
    let group_id = field(&message.group_id);
    let previous_id = field(&message.previous_id);
    if (kind == EventType::Group && group_id.is_none())
        || (kind == EventType::Alias && previous_id.is_none())
    {
        return None;
    }
    let message_id = field(&message.message_id).unwrap_or_else(|| {
        uuid::Uuid::from_u128(meta.request_id.wrapping_add(index as u128)).to_string()
    });
    let client_timestamp = match timestamp(message.timestamp.as_ref())? {
        Some(ts) => Some(ts),
        None => timestamp(message.original_timestamp.as_ref())?,
    };
    let sent_at = timestamp(message.sent_at.as_ref())?.or(batch_sent_at);
    // Clock-skew correction, as in the general decoder.
    let timestamp = match (client_timestamp, sent_at) {
        (Some(ts), Some(sent)) => meta.received_at_micros - (sent - ts),
        (Some(ts), None) => ts,
        (None, _) => meta.received_at_micros,
    };
    if !(MIN_MICROS..=MAX_MICROS).contains(&timestamp) {
        return None;
    }

    let properties = object(message.properties)?;
    let traits = object(message.traits)?;
    let context_text = object(message.context)?;
    let integrations = object(message.integrations)?;
    let context: Context<'_> = match message.context {
        Some(raw) => serde_json::from_str(raw.get()).ok()?,
        None => Context::default(),
    };
    // A client-reported IP is stored only where the policy keeps it as it is; where it would
    // change, the general decoder rewrites the stored context too.
    let ip = match context.ip {
        None => meta
            .client_ip
            .as_deref()
            .and_then(|ip| meta.ip_policy.apply(ip)),
        Some(raw) => {
            let reported: Text<'_> = serde_json::from_str(raw.get()).ok()?;
            let reported = reported.non_empty()?;
            let kept = meta.ip_policy.apply(reported)?;
            if kept != reported {
                return None;
            }
            Some(kept)
        }
    };
    // The event's `integrations` are kept inside the stored context.
    let stored_context = match (context_text, integrations) {
        (context, None) => context.map(|text| compact(text).into_owned()),
        (None, Some(integrations)) => {
            Some(format!("{{\"integrations\":{}}}", compact(integrations)))
        }
        (Some(_), Some(_)) if context.integrations.0 => return None,
        (Some(context), Some(integrations)) => {
            let context = compact(context);
            let open = &context[..context.len() - 1];
            let separator = if open == "{" { "" } else { "," };
            Some(format!(
                "{open}{separator}\"integrations\":{}}}",
                compact(integrations)
            ))
        }
    };
    let traits = match traits {
        Some(text) => Some(text),
        None => object(context.traits).flatten(),
    };

    let from_properties: Page<'_> = if kind == EventType::Page {
        nested(message.properties)?
    } else {
        Page::default()
    };
    let (page, campaign) = (context.page.0, context.campaign.0);
    let fields = Fields {
        kind,
        message_id,
        event_name,
        timestamp,
        sent_at,
        anonymous_id,
        user_id: user_id.map(str::to_owned),
        group_id,
        previous_id,
        page_url: from_properties.url.get().or(page.url.get()),
        page_path: from_properties.path.get().or(page.path.get()),
        page_title: from_properties.title.get().or(page.title.get()),
        page_referrer: from_properties.referrer.get().or(page.referrer.get()),
        campaign: [
            campaign.source.get(),
            campaign.medium.get(),
            campaign.name.get(),
            campaign.term.get(),
            campaign.content.get(),
        ],
        user_agent: context.user_agent.get(),
        session_id: context.session_id.get(),
        locale: context.locale.get(),
        ip,
        properties: properties.map(|text| compact(text).into_owned()),
        traits: traits.map(|text| compact(text).into_owned()),
        context: stored_context,
    };
    Some(fields.assemble(meta))
}

/// Asserts that the two decoders gave the same rows: every column equal, the JSON columns as
/// JSON values (the general decoder sorts keys and re-serializes numbers). Used by the tests
/// below and by the Segment fuzz target.
#[doc(hidden)]
pub fn assert_same_rows(fast: &[Event], general: &[Event]) {
    let json = |text: &Option<String>| {
        text.as_deref().map(|text| {
            serde_json::from_str::<serde_json::Value>(text).expect("stored JSON parses")
        })
    };
    assert_eq!(fast.len(), general.len());
    for (fast, general) in fast.iter().zip(general) {
        assert_eq!(json(&fast.properties), json(&general.properties));
        assert_eq!(json(&fast.traits), json(&general.traits));
        assert_eq!(json(&fast.context), json(&general.context));
        let strip = |event: &Event| Event {
            properties: None,
            traits: None,
            context: None,
            ..event.clone()
        };
        assert_eq!(strip(fast), strip(general));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IpPolicy;
    use crate::segment::{Endpoint, ParsedBody};

    fn meta() -> RequestMeta {
        RequestMeta {
            client_ip: Some("192.0.2.7".into()),
            user_agent: Some("curl/8.0".into()),
            ..RequestMeta::new(1_704_164_645_000_000, "web", 42)
        }
    }

    fn both(meta: &RequestMeta, body: &str) -> (Vec<Event>, Vec<Event>) {
        let decode = |fast| {
            ParsedBody::parse(Endpoint::Batch, body.as_bytes())
                .unwrap()
                .into_events_with(meta, fast)
                .unwrap()
        };
        (decode(true), decode(false))
    }

    /// Decodes `event` alone in a batch both ways, checks they agree, and says whether the
    /// fast decoder took it.
    fn check(meta: &RequestMeta, event: &str) -> (bool, Event) {
        let body = format!(r#"{{"batch": [{event}], "sentAt": "2024-01-02T03:04:05Z"}}"#);
        let (fast, general) = both(meta, &body);
        assert_same_rows(&fast, &general);
        let text = ParsedBody::parse(Endpoint::Batch, body.as_bytes())
            .unwrap()
            .batch_events
            .unwrap();
        let taken = decode(meta, 0, text.iter().next().unwrap(), None).is_some();
        (taken, fast.into_iter().next().unwrap())
    }

    const PAGE: &str = r#"{"type": "page", "name": "Home", "anonymousId": "a-1", "messageId": "m-1",
        "timestamp": "2024-01-02T03:04:00.123Z",
        "properties": {"url": "https://shop.example/x?utm_source=news&utm_medium=mail", "title": "X",
                       "referrer": "https://www.google.com/search?q=a"},
        "context": {"library": {"name": "analytics.js", "version": "5.2.0"}, "locale": "en-US",
                    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15",
                    "ip": "198.51.100.7", "sessionId": "s-1",
                    "page": {"path": "/from-context", "url": "https://ignored.example/"},
                    "campaign": {"source": "override", "term": "shoes"}}}"#;

    #[test]
    fn the_common_shapes_take_the_fast_path_and_agree() {
        let meta = meta();
        let (taken, page) = check(&meta, PAGE);
        assert!(taken);
        // The page call's own properties win over context.page; the path falls back to it.
        assert_eq!(
            page.page_url.as_deref(),
            Some("https://shop.example/x?utm_source=news&utm_medium=mail")
        );
        assert_eq!(page.page_path.as_deref(), Some("/from-context"));
        assert_eq!(page.referrer_host.as_deref(), Some("google.com"));
        assert_eq!(page.utm[0].as_deref(), Some("override"));
        assert_eq!(page.utm[1].as_deref(), Some("mail"));
        assert_eq!(page.utm[3].as_deref(), Some("shoes"));
        assert_eq!(
            page.agent
                .as_ref()
                .and_then(|agent| agent.browser.as_deref()),
            Some("Safari")
        );
        assert_eq!(page.ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(page.session_id.as_deref(), Some("s-1"));
        // Stored as sent, whitespace between tokens removed.
        assert!(
            page.properties
                .as_deref()
                .unwrap()
                .starts_with(r#"{"url":"https://shop.example/x"#)
        );

        let cases = [
            r#"{"type": "track", "event": "Added", "userId": "u-1", "properties": {"price": 1.5e2, "tags": ["a", "b"], "nested": {"deep": null}}}"#,
            r#"{"type": "identify", "userId": "u-1", "traits": {"email": "a@b.c"}, "context": {"traits": {"ignored": true}}}"#,
            r#"{"type": "track", "event": "E", "userId": "u", "context": {"traits": {"plan": "pro"}}}"#,
            r#"{"type": "group", "groupId": "g", "anonymousId": "a"}"#,
            r#"{"type": "alias", "previousId": "p", "userId": "u"}"#,
            r#"{"type": "screen", "name": "Home", "userId": "u", "originalTimestamp": "2024-01-02T03:00:00Z"}"#,
            r#"{"type": "track", "event": "E", "userId": "u", "timestamp": "2024-01-02T03:00:00Z", "sentAt": "2024-01-02T03:00:10Z"}"#,
            // Escapes: the text is owned then, and stored with its escapes.
            r#"{"type": "track", "event": "caf\u00e9 \"q\"", "userId": "u\n1", "properties": {"k": "a\\b \"c\" \u00e9"}}"#,
            // Non-ASCII, and whitespace inside strings kept.
            r#"{"type":"page","anonymousId":"a","properties":{"title":"Grüße  aus  Köln","url":"https://x.example/ä"}}"#,
            // Values of the wrong type where the general decoder ignores them.
            r#"{"type": "page", "anonymousId": "a", "context": {"page": "not an object", "campaign": [1], "locale": 5, "userAgent": {"a": 1}}}"#,
            r#"{"type": "page", "anonymousId": "a", "properties": {"url": 42, "title": ""}, "context": {"page": {"url": "https://p.example/y"}}}"#,
            // Integrations are kept inside the stored context.
            r#"{"type": "track", "event": "E", "userId": "u", "integrations": {"All": false}}"#,
            r#"{"type": "track", "event": "E", "userId": "u", "integrations": {}, "context": {}}"#,
            r#"{"type": "track", "event": "E", "userId": "u", "integrations": {"A": true}, "context": { "locale" : "de" } }"#,
            r#"{"type": "track", "event": "E", "userId": "u", "properties": null, "context": null, "integrations": null}"#,
        ];
        for case in cases {
            let (taken, _) = check(&meta, case);
            assert!(taken, "{case}");
        }
    }

    #[test]
    fn what_the_fast_path_leaves_to_the_general_decoder_still_agrees() {
        let meta = meta();
        let cases = [
            // Numbers as ids.
            r#"{"type": "track", "event": "E", "userId": 42}"#,
            // A duplicate key.
            r#"{"type": "track", "event": "E", "userId": "u", "userId": "v"}"#,
            r#"{"type": "page", "anonymousId": "a", "context": {"page": {"url": "https://a.example/", "url": "https://b.example/"}}}"#,
            // An IP the general decoder replaces in the stored context.
            r#"{"type": "track", "event": "E", "userId": "u", "context": {"ip": ""}}"#,
            r#"{"type": "track", "event": "E", "userId": "u", "context": {"ip": null}}"#,
            r#"{"type": "track", "event": "E", "userId": "u", "context": {"ip": 7}}"#,
            // Integrations on both levels are merged.
            r#"{"type": "track", "event": "E", "userId": "u", "integrations": {"A": true}, "context": {"integrations": {"B": false}}}"#,
        ];
        for case in cases {
            let (taken, _) = check(&meta, case);
            assert!(!taken, "{case}");
        }
        // An IP the policy changes: the stored context must change with it.
        let truncate = RequestMeta {
            ip_policy: IpPolicy::Truncate,
            ..meta.clone()
        };
        let (taken, event) = check(&truncate, PAGE);
        assert!(!taken);
        assert_eq!(event.ip.as_deref(), Some("198.51.100.0"));
        let already = PAGE.replace("198.51.100.7", "198.51.100.0");
        assert!(check(&truncate, &already).0);
        let drop = RequestMeta {
            ip_policy: IpPolicy::Drop,
            ..meta.clone()
        };
        assert!(!check(&drop, PAGE).0);
        assert_eq!(
            check(&drop, r#"{"type": "track", "event": "E", "userId": "u"}"#)
                .1
                .ip,
            None
        );
    }

    #[test]
    fn a_batch_context_takes_the_general_decoder_for_every_event() {
        let body = r#"{"batch": [{"type": "track", "event": "E", "userId": "u", "context": {"locale": "de"}}],
                       "context": {"ip": "203.0.113.9", "locale": "en"}, "integrations": {"All": true}}"#;
        let (fast, general) = both(&meta(), body);
        assert_same_rows(&fast, &general);
        assert_eq!(fast[0].locale.as_deref(), Some("de"));
        assert_eq!(fast[0].ip.as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn invalid_events_give_the_general_decoders_errors() {
        for event in [
            r#"{"type": "track", "userId": "u"}"#,
            r#"{"type": "track", "event": "E"}"#,
            r#"{"type": "nope", "event": "E", "userId": "u"}"#,
            r#"{"type": "track", "event": "E", "userId": "u", "properties": [1]}"#,
            r#"{"type": "track", "event": "E", "userId": "u", "timestamp": "yesterday"}"#,
        ] {
            let body = format!(r#"{{"batch": [{event}]}}"#);
            let parsed = |_| ParsedBody::parse(Endpoint::Batch, body.as_bytes()).unwrap();
            let fast = parsed(()).into_events_with(&meta(), true).unwrap_err();
            let general = parsed(()).into_events_with(&meta(), false).unwrap_err();
            assert_eq!(fast.to_string(), general.to_string());
        }
    }

    #[test]
    fn compact_removes_whitespace_between_tokens_only() {
        assert!(matches!(compact(r#"{"a":"b c"}"#), Cow::Borrowed(_)));
        assert_eq!(
            compact("{ \"a\" :\t\"b \\\" c\" ,\n\"d\": [1, 2] }"),
            r#"{"a":"b \" c","d":[1,2]}"#
        );
        assert_eq!(compact(r#"{"k": "\\", "x": 1}"#), r#"{"k":"\\","x":1}"#);
    }
}
