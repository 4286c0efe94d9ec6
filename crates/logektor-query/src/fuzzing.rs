//! The SQL fuzz target's body (`fuzz/` runs it under libFuzzer; `tests/fuzz_corpus.rs` replays
//! the corpus on stable). Arbitrary bytes become a SQL request, which is parsed, planned and
//! run read-only against a small in-memory `events` table with tight limits, and its result
//! encoded. Nothing may panic. (That a scoped read sees only its sources is checked by the
//! integration tests: arbitrary SQL can produce any column values itself.)

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use logektor_event::{Endpoint, RequestMeta, decode, to_record_batch};

use crate::engine::{EventsView, QueryConfig, QueryEngine, StaticSource};
use crate::provider::Scope;
use crate::request::SqlRequest;

struct Harness {
    runtime: tokio::runtime::Runtime,
    engine: QueryEngine,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let body = serde_json::json!({"batch": [
            {"type": "page", "anonymousId": "a1", "properties": {"url": "https://ex.com/a?utm_source=x", "title": "A"},
             "context": {"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"}},
            {"type": "track", "event": "Signed Up", "userId": "u1", "anonymousId": "a1", "properties": {"plan": "pro", "n": 3}},
            {"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}},
            {"type": "track", "event": "Bought", "anonymousId": "a2", "properties": {"price": 9.5, "items": [1, 2]}}
        ]});
        let web = decode(
            &RequestMeta::new(1_715_000_000_000_000, "web", 1),
            Endpoint::Batch,
            body.to_string().as_bytes(),
        )
        .expect("the fixture decodes");
        let app = decode(
            &RequestMeta::new(1_715_000_100_000_000, "app", 2),
            Endpoint::Batch,
            body.to_string().as_bytes(),
        )
        .expect("the fixture decodes");
        let view = EventsView {
            table: Default::default(),
            buffered: vec![to_record_batch(&web), to_record_batch(&app)],
        };
        let config = QueryConfig {
            timeout: Duration::from_secs(2),
            memory_limit: 64 * 1024 * 1024,
            max_spill_bytes: 0,
            max_result_bytes: 1024 * 1024,
            target_partitions: 1,
        };
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            engine: QueryEngine::new(config, Arc::new(StaticSource(view)))
                .expect("the engine starts"),
        }
    })
}

/// The first byte picks JSON or text and a full or source-scoped read; the rest is the body.
pub fn sql(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(request) = SqlRequest::parse(body, selector & 1 == 1, None) else {
        return;
    };
    let scope = if selector & 2 == 2 {
        Scope::Sources(vec!["web".to_owned()].into())
    } else {
        Scope::All
    };
    let harness = harness();
    harness.runtime.block_on(async {
        let Ok(stream) = harness
            .engine
            .execute_in_scope(&request.sql, None, &scope)
            .await
        else {
            return;
        };
        let schema = stream.schema();
        if let Ok(batches) = stream.collect().await {
            let _ = crate::format::encode_all(request.format, &schema, &batches);
        }
    });
}
