//! Replays the SQL fuzz corpus (`fuzz/corpus/sql`) and past failures (`fuzz/regressions/sql`)
//! through the target body libFuzzer runs, on stable and in every test run.

use std::path::Path;

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
fn sql_fuzz_corpus_and_regressions_replay_without_panics() {
    // Read at run time, not compiled in: a binary cargo reuses from a build of another
    // checkout sharing the target folder would otherwise look in that checkout.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let fuzz = Path::new(&manifest).join("fuzz");
    let corpus = inputs(&fuzz.join("corpus/sql"));
    assert!(
        corpus.len() >= 20,
        "the SQL corpus is missing ({} inputs)",
        corpus.len()
    );
    let regressions = inputs(&fuzz.join("regressions/sql"));
    for (file, data) in corpus.iter().chain(&regressions) {
        if std::panic::catch_unwind(|| logektor_query::fuzzing::sql(data)).is_err() {
            panic!("the SQL fuzz target panicked on {file}");
        }
    }
}
