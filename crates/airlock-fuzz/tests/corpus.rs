//! Replays every file under `fuzz/corpus/<target>/` through its target's body, so that the
//! normal test run covers the whole corpus, seeds and crashes kept as regressions alike.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::path::PathBuf;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for target in airlock_fuzz::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{target} has no corpus");
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| airlock_fuzz::run(target, &data));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
        }
    }
}
