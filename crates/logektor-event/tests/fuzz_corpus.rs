//! Replays the fuzz corpus (`fuzz/corpus/<target>`, minimized after each fuzzing campaign) and
//! the inputs that once failed (`fuzz/regressions/<target>`) through the same target bodies
//! libFuzzer runs, on stable and in every test run: what was fixed stays fixed.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("segment", logektor_event::fuzzing::segment),
    ("posthog", logektor_event::fuzzing::posthog),
    ("lzstring", logektor_event::fuzzing::lzstring),
    ("gzip", logektor_event::fuzzing::gzip),
    ("pixel", logektor_event::fuzzing::pixel),
];

fn inputs(folder: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn fuzz_corpus_and_regressions_replay_without_panics() {
    // Read at run time, not compiled in: a binary cargo reuses from a build of another
    // checkout sharing the target folder would otherwise look in that checkout.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let fuzz = Path::new(&manifest).join("fuzz");
    for (name, target) in TARGETS {
        let corpus = inputs(&fuzz.join("corpus").join(name));
        assert!(
            corpus.len() >= 3,
            "the {name} corpus is missing or nearly empty ({} inputs)",
            corpus.len()
        );
        let regressions = inputs(&fuzz.join("regressions").join(name));
        for (file, data) in corpus.iter().chain(&regressions) {
            if std::panic::catch_unwind(|| target(data)).is_err() {
                panic!("fuzz target {name} panicked on {file}");
            }
        }
    }
}
