//! Replays a crate's committed fuzz corpora, `fuzz/corpus/<target>/`, through the
//! bodies of its fuzz targets (each library's hidden `fuzzing` module), so that every
//! input the fuzzer kept, reproducers of fixed crashes included, is checked by an
//! ordinary `cargo test` without cargo-fuzz or nightly. docs/fuzzing.md says how the
//! corpora are made. A missing or empty corpus fails: this cannot pass by finding
//! nothing. Included by each crate's `tests/fuzz_corpus.rs` (`#[path]`), so the three
//! crates share one replay.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Runs every file of `fuzz/corpus/<target>` through `body`; fails naming each file
/// that panics.
pub fn replay(crate_dir: &str, target: &str, body: fn(&[u8])) {
    let dir = Path::new(crate_dir).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs of {target} panic:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}
