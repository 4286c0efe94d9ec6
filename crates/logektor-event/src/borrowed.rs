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
//! The text it reads was validated by the envelope's parse, so it is read with
//! [`crate::walk::Walker`], which trusts that, rather than parsed by serde_json a second time.
//! Each reader below answers what serde's derive of the same struct answered (the decoder used
//! it until 2026-12-07): keys matched as written, a duplicate of a known key refused, `null`
//! read as absent where the field is optional.
//!
//! Decoding stays a pure function of the body: the same body always takes the same path, so a
//! WAL replay stores the very text that was acknowledged.

use std::borrow::Cow;

use crate::Event;
use crate::segment::{EventRow, EventType, Fields, RequestMeta};
use crate::time::{MAX_MICROS, MIN_MICROS, parse_iso8601_micros};
use crate::walk::{Walker, string_end};

/// One event of a batch, as far as the fast decoder reads it. Keys it does not name are
/// skipped.
#[derive(Default)]
struct Message<'a> {
    kind: Option<Text<'a>>,
    user_id: Option<Text<'a>>,
    anonymous_id: Option<Text<'a>>,
    event: Option<Text<'a>>,
    name: Option<Text<'a>>,
    group_id: Option<Text<'a>>,
    previous_id: Option<Text<'a>>,
    message_id: Option<Text<'a>>,
    timestamp: Option<Text<'a>>,
    original_timestamp: Option<Text<'a>>,
    sent_at: Option<Text<'a>>,
    /// The JSON text of these four, `None` when absent or `null`.
    properties: Option<Json<'a>>,
    traits: Option<Json<'a>>,
    context: Option<Json<'a>>,
    integrations: Option<Json<'a>>,
    /// `context` read, when it is an object.
    context_fields: Option<Context<'a>>,
}

impl<'a> Message<'a> {
    /// `None` when a known key comes twice or a text field holds something else than a string
    /// or `null`.
    fn read(text: &'a str) -> Option<Self> {
        let mut message = Message::default();
        let mut seen = Seen::default();
        Walker::new(text).object(|key, walker| {
            let (bit, slot) = match key {
                "type" => (0, &mut message.kind),
                "userId" => (1, &mut message.user_id),
                "anonymousId" => (2, &mut message.anonymous_id),
                "event" => (3, &mut message.event),
                "name" => (4, &mut message.name),
                "groupId" => (5, &mut message.group_id),
                "previousId" => (6, &mut message.previous_id),
                "messageId" => (7, &mut message.message_id),
                "timestamp" => (8, &mut message.timestamp),
                "originalTimestamp" => (9, &mut message.original_timestamp),
                "sentAt" => (10, &mut message.sent_at),
                "context" => {
                    // Read in place: its text is walked once, for its span and its fields.
                    seen.first(13)?;
                    let (fields, json) = spanned(walker, |walker| {
                        if walker.peek() == b'{' {
                            Context::read_at(walker).map(Some)
                        } else {
                            walker.value().map(|_| None)
                        }
                    })?;
                    (message.context_fields, message.context) = (fields, json);
                    return Some(());
                }
                _ => {
                    let (bit, slot) = match key {
                        "properties" => (11, &mut message.properties),
                        "traits" => (12, &mut message.traits),
                        "integrations" => (14, &mut message.integrations),
                        _ => return walker.value().map(drop),
                    };
                    seen.first(bit)?;
                    *slot = raw_or_null(walker)?;
                    return Some(());
                }
            };
            seen.first(bit)?;
            *slot = text_or_null(walker)?;
            Some(())
        })?;
        Some(message)
    }
}

/// The parts of `context` that become columns.
#[derive(Default)]
struct Context<'a> {
    page: Page<'a>,
    campaign: Campaign<'a>,
    user_agent: Lenient<'a>,
    locale: Lenient<'a>,
    session_id: Lenient<'a>,
    /// Present even when `null`: the general decoder replaces any `ip` key it finds.
    ip: Option<&'a str>,
    traits: Option<Json<'a>>,
    /// Whether the key was there at all, whatever its value.
    integrations: bool,
}

impl<'a> Context<'a> {
    /// The object at `walker`.
    fn read_at(walker: &mut Walker<'a>) -> Option<Self> {
        let mut context = Context::default();
        let mut seen = Seen::default();
        walker.object(|key, walker| {
            match key {
                "page" => {
                    seen.first(0)?;
                    context.page = if_object(walker, Page::read_at)?;
                }
                "campaign" => {
                    seen.first(1)?;
                    context.campaign = if_object(walker, Campaign::read_at)?;
                }
                "userAgent" => {
                    seen.first(2)?;
                    context.user_agent = Lenient::read(walker)?;
                }
                "locale" => {
                    seen.first(3)?;
                    context.locale = Lenient::read(walker)?;
                }
                "sessionId" => {
                    seen.first(4)?;
                    context.session_id = Lenient::read(walker)?;
                }
                "ip" => {
                    seen.first(5)?;
                    context.ip = Some(walker.value()?);
                }
                "traits" => {
                    seen.first(6)?;
                    context.traits = raw_or_null(walker)?;
                }
                "integrations" => {
                    seen.first(7)?;
                    walker.value()?;
                    context.integrations = true;
                }
                _ => {
                    walker.value()?;
                }
            }
            Some(())
        })?;
        Some(context)
    }
}

/// `properties` of a page call, or `context.page`.
#[derive(Default)]
struct Page<'a> {
    url: Lenient<'a>,
    path: Lenient<'a>,
    title: Lenient<'a>,
    referrer: Lenient<'a>,
}

impl<'a> Page<'a> {
    /// The object at `walker`.
    fn read_at(walker: &mut Walker<'a>) -> Option<Self> {
        let mut page = Page::default();
        let mut seen = Seen::default();
        walker.object(|key, walker| {
            let (bit, slot) = match key {
                "url" => (0, &mut page.url),
                "path" => (1, &mut page.path),
                "title" => (2, &mut page.title),
                "referrer" => (3, &mut page.referrer),
                _ => return walker.value().map(drop),
            };
            seen.first(bit)?;
            *slot = Lenient::read(walker)?;
            Some(())
        })?;
        Some(page)
    }
}

/// `context.campaign`, in the order of [`crate::segment::CAMPAIGN_KEYS`].
#[derive(Default)]
struct Campaign<'a>([Lenient<'a>; 5]);

impl<'a> Campaign<'a> {
    /// The object at `walker`.
    fn read_at(walker: &mut Walker<'a>) -> Option<Self> {
        let mut campaign = Campaign::default();
        let mut seen = Seen::default();
        walker.object(|key, walker| {
            let index = match key {
                "source" => 0,
                "medium" => 1,
                "name" => 2,
                "term" => 3,
                "content" => 4,
                _ => return walker.value().map(drop),
            };
            seen.first(index)?;
            campaign.0[index] = Lenient::read(walker)?;
            Some(())
        })?;
        Some(campaign)
    }
}

/// The known keys of one object seen so far, to refuse a duplicate as serde's derive did.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// `None` when key number `bit` was seen before.
    fn first(&mut self, bit: usize) -> Option<()> {
        let mask = 1 << bit;
        let first = self.0 & mask == 0;
        self.0 |= mask;
        first.then_some(())
    }
}

/// A JSON string, borrowed from the input unless it had escapes.
struct Text<'a>(Cow<'a, str>);

impl<'a> Text<'a> {
    /// The text, or `None` when empty (an empty id counts as absent).
    fn non_empty(self) -> Option<Cow<'a, str>> {
        (!self.0.is_empty()).then_some(self.0)
    }
}

/// A string (`Some(Some(_))`) or `null` (`Some(None)`); `None` for any other value, which sends
/// the event to the general decoder (that accepts numbers as ids, for one).
fn text_or_null<'a>(walker: &mut Walker<'a>) -> Option<Option<Text<'a>>> {
    match walker.peek() {
        b'"' => Some(Some(Text(walker.string()?.value()?))),
        b'n' => walker.value().map(|_| None),
        _ => None,
    }
}

/// A JSON value's text as sent.
#[derive(Clone, Copy)]
struct Json<'a> {
    text: &'a str,
    /// Whether it has whitespace between tokens.
    spaced: bool,
}

impl<'a> Json<'a> {
    /// The text without whitespace between tokens, as it is stored.
    fn compacted(self) -> Cow<'a, str> {
        if self.spaced {
            compact(self.text)
        } else {
            Cow::Borrowed(self.text)
        }
    }
}

/// What `read` answers for the value at `walker`, with the value's text (`None` for `null`).
fn spanned<'a, T>(
    walker: &mut Walker<'a>,
    read: impl FnOnce(&mut Walker<'a>) -> Option<T>,
) -> Option<(T, Option<Json<'a>>)> {
    walker.peek();
    let (start, spaces) = (walker.position(), walker.spaces());
    let value = read(walker)?;
    let text = walker.since(start)?;
    let json = (text != "null").then_some(Json {
        text,
        spaced: walker.spaces() != spaces,
    });
    Some((value, json))
}

/// Any value's text, `Some(None)` for `null`.
fn raw_or_null<'a>(walker: &mut Walker<'a>) -> Option<Option<Json<'a>>> {
    spanned(walker, |walker| walker.value().map(drop)).map(|((), json)| json)
}

/// A non-empty string or nothing: any other value (a number, an object, `null`) reads as
/// absent, as the general decoder's `nested_str` does.
#[derive(Default)]
struct Lenient<'a>(Option<Cow<'a, str>>);

impl<'a> Lenient<'a> {
    fn read(walker: &mut Walker<'a>) -> Option<Self> {
        if walker.peek() == b'"' {
            let text = walker.string()?.value()?;
            Some(Lenient((!text.is_empty()).then_some(text)))
        } else {
            walker.value().map(|_| Lenient(None))
        }
    }
}

/// The object at `walker` read by `read`; any other value (the general decoder ignores a
/// `context.page` that is not an object) reads as `T::default()`.
fn if_object<'a, T: Default>(
    walker: &mut Walker<'a>,
    read: impl FnOnce(&mut Walker<'a>) -> Option<T>,
) -> Option<T> {
    if walker.peek() == b'{' {
        read(walker)
    } else {
        walker.value().map(|_| T::default())
    }
}

/// An object-valued key: `Some(Some(text))` for an object, `Some(None)` when absent, `None`
/// (take the general decoder) for any other value, which is an error there.
fn object(raw: Option<Json<'_>>) -> Option<Option<Json<'_>>> {
    match raw {
        None => Some(None),
        Some(raw) if raw.text.starts_with('{') => Some(Some(raw)),
        Some(_) => None,
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
/// `raw` must be valid JSON (a value the envelope's parse validated).
pub(crate) fn compact(raw: &str) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    // `copied` is where the part not yet copied to `out` starts.
    let (mut at, mut copied) = (0, 0);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => at = string_end(bytes, at + 1).map_or(bytes.len(), |(end, _)| end),
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

/// Decodes event `index` of a batch without a batch-level context, or `None` to leave it to the
/// general decoder.
pub(crate) fn decode<'a>(
    meta: &'a RequestMeta,
    index: usize,
    text: &'a str,
    batch_sent_at: Option<i64>,
) -> Option<EventRow<'a>> {
    let message = Message::read(text)?;
    let kind = EventType::parse(&message.kind?.0)?;
    let user_id = message.user_id.and_then(Text::non_empty);
    let mut anonymous_id = message.anonymous_id.and_then(Text::non_empty);
    if user_id.is_none() && anonymous_id.is_none() {
        anonymous_id = Some(Cow::Borrowed(meta.visitor_id.as_deref()?));
    }
    let event_name = match kind {
        EventType::Track => Some(message.event.and_then(Text::non_empty)?),
        EventType::Page | EventType::Screen => message.name.and_then(Text::non_empty),
        _ => None,
    };
    let group_id = message.group_id.and_then(Text::non_empty);
    let previous_id = message.previous_id.and_then(Text::non_empty);
    if (kind == EventType::Group && group_id.is_none())
        || (kind == EventType::Alias && previous_id.is_none())
    {
        return None;
    }
    let message_id = message
        .message_id
        .and_then(Text::non_empty)
        .unwrap_or_else(|| {
            Cow::Owned(
                uuid::Uuid::from_u128(meta.request_id.wrapping_add(index as u128)).to_string(),
            )
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
    let context = message.context_fields.unwrap_or_default();
    // A client-reported IP is stored only where the policy keeps it as it is; where it would
    // change, the general decoder rewrites the stored context too.
    let ip = match context.ip {
        None => meta
            .client_ip
            .as_deref()
            .and_then(|ip| meta.ip_policy.keep(ip)),
        Some(raw) => {
            let reported = Text(Walker::new(raw).string()?.value()?).non_empty()?;
            if meta.ip_policy.keep(&reported)? != reported {
                return None;
            }
            Some(reported)
        }
    };
    // The event's `integrations` are kept inside the stored context.
    let stored_context = match (context_text, integrations) {
        (context, None) => context.map(Json::compacted),
        (None, Some(integrations)) => Some(Cow::Owned(format!(
            "{{\"integrations\":{}}}",
            integrations.compacted()
        ))),
        (Some(_), Some(_)) if context.integrations => return None,
        (Some(context), Some(integrations)) => {
            let context = context.compacted();
            let open = &context[..context.len() - 1];
            let separator = if open == "{" { "" } else { "," };
            Some(Cow::Owned(format!(
                "{open}{separator}\"integrations\":{}}}",
                integrations.compacted()
            )))
        }
    };
    let traits = match traits {
        Some(text) => Some(text),
        None => object(context.traits).flatten(),
    };

    let from_properties: Page<'_> = if kind == EventType::Page {
        match properties {
            Some(json) => Page::read_at(&mut Walker::new(json.text))?,
            None => Page::default(),
        }
    } else {
        Page::default()
    };
    let (page, campaign) = (context.page, context.campaign.0);
    let fields = Fields {
        kind,
        message_id,
        event_name,
        timestamp,
        sent_at,
        anonymous_id,
        user_id,
        group_id,
        previous_id,
        page_url: from_properties.url.0.or(page.url.0),
        page_path: from_properties.path.0.or(page.path.0),
        page_title: from_properties.title.0.or(page.title.0),
        page_referrer: from_properties.referrer.0.or(page.referrer.0),
        campaign: campaign.map(|value| value.0),
        user_agent: context.user_agent.0,
        session_id: context.session_id.0,
        locale: context.locale.0,
        ip,
        properties: properties.map(Json::compacted),
        traits: traits.map(Json::compacted),
        context: stored_context,
    };
    Some(fields.assemble(meta))
}

/// Asserts that the two decoders gave the same rows: every column equal, the JSON columns as
/// JSON values (the general decoder sorts keys and re-serializes numbers). Used by the tests
/// below and by the Segment fuzz target.
#[doc(hidden)]
pub fn assert_same_rows(fast: &[Event], general: &[Event]) {
    let json = |text: &Option<Cow<'_, str>>| {
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
    use crate::segment::{Endpoint, ParsedBody};
    use crate::{IpPolicy, to_record_batch};

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

    /// Generated events in the shapes the fast decoder reads and around them: whitespace
    /// between any tokens, escapes in strings and keys, duplicate keys, `null`s and values of
    /// every type where strings or objects are expected. Both decoders must give the same rows
    /// or the same error for every batch, and most events must take the fast path (or the test
    /// would prove nothing about it).
    #[test]
    fn generated_events_decode_the_same_both_ways() {
        let mut generator = Generated(0x9e37_79b9_7f4a_7c15);
        let policies = [IpPolicy::Keep, IpPolicy::Truncate, IpPolicy::Drop];
        let (mut events, mut fast_events) = (0, 0);
        for round in 0..3_000 {
            let meta = RequestMeta {
                ip_policy: policies[round % 3],
                ..meta()
            };
            let batch: Vec<String> = (0..8).map(|_| generator.event()).collect();
            let body = format!(
                "{{\"batch\":[{}]{}}}",
                batch.join(","),
                if generator.chance(3) {
                    r#","sentAt":"2024-01-02T03:04:05Z""#
                } else {
                    ""
                }
            );
            let Ok(parsed) = ParsedBody::parse(Endpoint::Batch, body.as_bytes()) else {
                continue;
            };
            for (index, text) in parsed.batch_events.as_ref().unwrap().iter().enumerate() {
                events += 1;
                let Some(event) = decode(&meta, index, text, None) else {
                    continue;
                };
                fast_events += 1;
                // Stored without whitespace between tokens, as the general decoder stores them.
                for json in [&event.properties, &event.traits, &event.context] {
                    let json = json.as_deref().unwrap_or_default();
                    assert!(matches!(compact(json), Cow::Borrowed(_)), "{json}");
                }
            }
            let fast = parsed.into_events_with(&meta, true);
            let general = ParsedBody::parse(Endpoint::Batch, body.as_bytes())
                .unwrap()
                .into_events_with(&meta, false);
            match (&fast, &general) {
                (Ok(fast), Ok(general)) => {
                    assert_same_rows(fast, general);
                    // The ingest path's batch, from rows borrowing the body, is the batch the
                    // WAL replay builds from owned events.
                    let mut parsed = ParsedBody::parse(Endpoint::Batch, body.as_bytes()).unwrap();
                    let rows = parsed.rows(&meta).unwrap();
                    assert_eq!(to_record_batch(&rows), to_record_batch(fast), "{body}");
                }
                (Err(fast), Err(general)) => {
                    assert_eq!(fast.to_string(), general.to_string(), "{body}")
                }
                _ => panic!("the decoders disagree on {body}: {fast:?} against {general:?}"),
            }
        }
        // About half the generated events are invalid (no type, no id, a bad timestamp) and a
        // quarter are valid in ways the fast decoder leaves to the general one; ~19% take the
        // fast path, 4,500 of them.
        assert!(events > 20_000, "{events}");
        assert!(
            fast_events * 7 > events,
            "{fast_events} of {events} took the fast path"
        );
    }

    /// A small deterministic generator of event texts (xorshift).
    struct Generated(u64);

    impl Generated {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// True one time in `n`.
        fn chance(&mut self, n: u64) -> bool {
            self.next().is_multiple_of(n)
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }

        fn space(&mut self) -> &'static str {
            if self.chance(6) {
                self.pick(&[" ", "\n  ", "\t", " \r\n "])
            } else {
                ""
            }
        }

        /// `text` as a JSON string, some characters escaped.
        fn string(&mut self, text: &str) -> String {
            let mut out = String::from("\"");
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
                    '/' if self.chance(8) => out.push_str("\\/"),
                    c if self.chance(40) => {
                        let mut units = [0u16; 2];
                        for unit in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{unit:04X}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            if self.chance(3_000) {
                out.push_str(self.pick(&["\\ud800", "\\udc00"]));
            }
            out.push('"');
            out
        }

        fn text(&mut self) -> String {
            let text = self.pick(&[
                "",
                "a-1",
                "00007ce4-7ce4-4ce4-aa3c-4d2fc85a1da4",
                "https://shop.example.com/docs/page-334?utm_source=news&utm_medium=mail",
                "/docs/page-334",
                "Grüße \"aus\" Köln\\ \n",
                "198.51.100.7",
                "198.51.100.0",
                "yesterday",
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15",
                "track",
                "page",
            ]);
            self.string(text)
        }

        /// Any JSON value, mostly strings.
        fn value(&mut self, depth: u32) -> String {
            match self.next() % 12 {
                0 => "null".into(),
                1 => self.pick(&["0", "-1.5e3", "42", "true", "false"]).into(),
                2 if depth < 3 => self.object(&["a", "url", "page", "ip"], depth + 1),
                3 if depth < 3 => {
                    let items: Vec<String> = (0..self.next() % 3)
                        .map(|_| self.value(depth + 1))
                        .collect();
                    format!("[{}]", items.join(","))
                }
                _ => self.text(),
            }
        }

        /// An object of some of `keys` (repeated now and then, sometimes written with an
        /// escape) with `value`s.
        fn object(&mut self, keys: &[&str], depth: u32) -> String {
            let mut entries = Vec::new();
            for &key in keys {
                if self.chance(3) {
                    continue;
                }
                let times = if self.chance(60) { 2 } else { 1 };
                for _ in 0..times {
                    let key = if self.chance(200) && !key.is_empty() {
                        format!("\"\\u{:04x}{}\"", key.as_bytes()[0], &key[1..])
                    } else {
                        format!("\"{key}\"")
                    };
                    let value = match key.as_str() {
                        "\"page\"" | "\"campaign\"" | "\"properties\"" if !self.chance(30) => self
                            .object(
                                &[
                                    "url", "path", "title", "referrer", "source", "medium", "name",
                                    "term", "content", "x",
                                ],
                                depth + 1,
                            ),
                        "\"context\"" if !self.chance(30) => self.object(
                            &[
                                "page",
                                "campaign",
                                "userAgent",
                                "locale",
                                "sessionId",
                                "ip",
                                "traits",
                                "integrations",
                                "library",
                            ],
                            depth + 1,
                        ),
                        "\"traits\"" | "\"integrations\"" | "\"library\"" if !self.chance(30) => {
                            self.object(&["plan", "All", "name"], depth + 1)
                        }
                        "\"timestamp\"" | "\"originalTimestamp\"" | "\"sentAt\""
                            if !self.chance(8) =>
                        {
                            let at = self
                                .pick(&["2024-01-02T03:04:00.123Z", "2024-01-02T03:00:00+01:00"]);
                            self.string(at)
                        }
                        "\"ip\"" if !self.chance(5) => {
                            let ip = self.pick(&["198.51.100.7", "198.51.100.0"]);
                            self.string(ip)
                        }
                        _ if depth == 0 && !self.chance(40) => self.text(),
                        _ => self.value(depth),
                    };
                    let (a, b, c) = (self.space(), self.space(), self.space());
                    entries.push(format!("{a}{key}{b}:{c}{value}"));
                }
            }
            let close = self.space();
            format!("{{{}{close}}}", entries.join(","))
        }

        fn event(&mut self) -> String {
            let kind = self.pick(&["track", "page", "identify", "screen", "group", "alias"]);
            let mut event = self.object(
                &[
                    "userId",
                    "anonymousId",
                    "event",
                    "name",
                    "groupId",
                    "previousId",
                    "messageId",
                    "timestamp",
                    "originalTimestamp",
                    "sentAt",
                    "properties",
                    "traits",
                    "context",
                    "integrations",
                    "other",
                ],
                0,
            );
            // Most events get a valid type first, so that the rest of them gets read.
            if !self.chance(10) {
                let kind = self.string(kind);
                event.replace_range(
                    0..1,
                    &format!("{{\"type\":{kind}{}", if event == "{}" { "" } else { "," }),
                );
            }
            event
        }
    }

    /// A lone surrogate escape (`"\ud83d"`, what `JSON.stringify` writes for a string cut in the
    /// middle of an emoji) once passed serde_json's validation where the fast decoder skipped a
    /// value, so the fast decoder stored it while the general decoder refused the event. Both
    /// read the body with such escapes replaced by U+FFFD now (`replace_lone_surrogates`).
    #[test]
    fn a_lone_surrogate_is_replaced_on_both_paths() {
        let body = r#"{"batch":[{"type":"track","event":"E","userId":"u","properties":{"title":"ab\ud83d"}}]}"#;
        let (fast, general) = both(&meta(), body);
        assert_same_rows(&fast, &general);
        assert_eq!(
            fast[0].properties.as_deref(),
            Some(r#"{"title":"ab\ufffd"}"#)
        );
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
