//! The benchmark tools' library half: [`traffic`], the deterministic Segment traffic generator,
//! shared by the `logektor-loadgen` binary and the criterion micro-benchmarks.

pub mod traffic;
