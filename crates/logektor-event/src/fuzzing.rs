//! The fuzz targets' bodies (`fuzz/` runs them under libFuzzer with `cargo fuzz`; the
//! `fuzz_corpus` test replays the kept corpus on stable in CI). Each takes arbitrary bytes
//! and must return without panicking, whatever they hold; what a decoder accepts must also
//! survive the rest of the ingest path (events to an Arrow batch).

use crate::segment::{Endpoint, EventType, ParsedBody, RequestMeta};
use crate::{MAX_BATCH_BYTES, posthog, to_record_batch};

fn meta() -> RequestMeta {
    let mut meta = RequestMeta::new(1_700_000_000_000_000, "default", 7);
    meta.client_ip = Some("203.0.113.9".into());
    meta.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36".into());
    meta
}

fn ingest(endpoint: Endpoint, body: &[u8]) {
    if let Ok(parsed) = ParsedBody::parse(endpoint, body) {
        let _ = parsed.write_key();
        let decoded = parsed.into_events(&meta());
        // The fast decoder of a batch's events must agree with the general one on every input:
        // the same rows, or the same error.
        if endpoint == Endpoint::Batch {
            let general = ParsedBody::parse(endpoint, body)
                .expect("parsed once")
                .into_events_with(&meta(), false);
            match (&decoded, &general) {
                (Ok(fast), Ok(general)) => crate::borrowed::assert_same_rows(fast, general),
                (Err(fast), Err(general)) => assert_eq!(fast.to_string(), general.to_string()),
                _ => panic!("the decoders disagree: {decoded:?} against {general:?}"),
            }
        }
        if let Ok(events) = decoded {
            let batch = to_record_batch(&events);
            assert_eq!(batch.num_rows(), events.len());
        }
    }
}

/// Segment bodies: the first byte picks the endpoint (batch or one of the single calls).
pub fn segment(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let endpoint = match usize::from(selector) % (EventType::ALL.len() + 1) {
        0 => Endpoint::Batch,
        n => Endpoint::Single(EventType::ALL[n - 1]),
    };
    ingest(endpoint, body);
}

/// PostHog bodies: the first byte picks the compression (none, base64, lz64) and whether the
/// payload comes as a `data=` form.
pub fn posthog(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let compression = match selector % 3 {
        0 => posthog::Compression::None,
        1 => posthog::Compression::Base64,
        _ => posthog::Compression::Lz64,
    };
    let form = (selector & 0x80 != 0).then(|| String::from_utf8_lossy(body).into_owned());
    if let Ok(json) = posthog::unwrap_body(body, form.as_deref(), compression, MAX_BATCH_BYTES) {
        assert!(json.len() <= MAX_BATCH_BYTES);
        ingest(Endpoint::PostHog, &json);
    }
}

/// LZ-String's three encodings, with a small output cap.
pub fn lzstring(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(out) = crate::lzstring::decompress_from_base64(&text, 4096) {
        assert!(out.len() <= 4096);
    }
}

/// gzip bodies with a small output cap.
pub fn gzip(data: &[u8]) {
    if let Ok(out) = crate::compression::gunzip(data, 4096) {
        assert!(out.len() <= 4096);
    }
}

/// Pixel query strings: the first byte picks track or page.
pub fn pixel(data: &[u8]) {
    let Some((&selector, query)) = data.split_first() else {
        return;
    };
    let kind = if selector % 2 == 0 {
        EventType::Track
    } else {
        EventType::Page
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    if let Ok(body) = crate::pixel::message(kind, &params, Some("https://example.com/from")) {
        ingest(Endpoint::Single(kind), &body);
    }
}
