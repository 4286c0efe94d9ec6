//! Nothing to link: this package only holds the criterion benchmarks in `benches/`
//! (`cargo bench -p logektor-micro`).
