//! Logektor's event model: wire formats in, canonical events out, as Arrow record batches.
//!
//! This crate sits at the very start of the flow
//! `ingest → WAL → buffer → Parquet → Delta → query`. It does no I/O: the ingest service hands
//! it a request body plus the [`RequestMeta`] it observed (receive time, source, client IP) and
//! gets back a [`RecordBatch`](arrow::record_batch::RecordBatch) in the canonical
//! [`schema::events_schema`], or a [`DecodeError`] that says exactly what is wrong with the input.
//!
//! Decoding is a pure function of `(RequestMeta, Endpoint, body)`. The WAL stores exactly those
//! inputs, so replaying a WAL record after a crash yields the very rows that were acknowledged,
//! generated message ids included.
//!
//! Main types: [`Endpoint`] (which Segment call, or PostHog, the body came from), [`RequestMeta`],
//! [`segment::decode`], [`builder::EventBatchBuilder`], [`Event`].

#[doc(hidden)]
pub mod borrowed;
pub mod builder;
pub mod compression;
pub mod enrich;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod lzstring;
pub mod pixel;
pub mod posthog;
pub mod schema;
pub mod segment;
mod time;
mod walk;

pub use builder::{EventBatchBuilder, to_record_batch};
pub use enrich::IpPolicy;
pub use error::{DecodeError, Result};
pub use segment::{
    Endpoint, Event, EventRow, EventType, RequestMeta, decode, decode_stored, scrub_body_ips,
};

/// Largest accepted single event, as serialized JSON (Segment documents 32 KB).
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Largest accepted batch body after decompression (Segment documents 500 KB).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
