//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through its entry point,
//! on stable Rust and without libFuzzer, so the default test suite guards every input a campaign
//! kept, and every crash it once found, forever. An entry point that panics fails this test with
//! the target and file named.

use std::path::{Path, PathBuf};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_target_has_a_committed_corpus() {
    for t in animatediff_fuzz_entry::TARGETS {
        let dir = corpus_root().join(t.name);
        assert!(dir.is_dir() && !files(&dir).is_empty(), "no corpus for fuzz target `{}` in {}", t.name, dir.display());
    }
    for entry in std::fs::read_dir(corpus_root()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(animatediff_fuzz_entry::target(&name).is_some(), "fuzz/corpus/{name} belongs to no target");
    }
}

#[test]
fn every_corpus_file_replays_without_a_panic() {
    let mut replayed = 0;
    let mut failures = Vec::new();
    for t in animatediff_fuzz_entry::TARGETS {
        let dir = corpus_root().join(t.name);
        if !dir.is_dir() {
            continue;
        }
        for file in files(&dir) {
            let data = std::fs::read(&file).unwrap();
            let started = std::time::Instant::now();
            if std::panic::catch_unwind(|| (t.run)(&data)).is_err() {
                failures.push(format!("{}: {}", t.name, file.display()));
            }
            let took = started.elapsed();
            if took.as_secs() >= 10 {
                failures.push(format!("{}: {} took {took:?} (limit 10 s)", t.name, file.display()));
            }
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} corpus files");
    assert!(failures.is_empty(), "{} corpus files failed:\n{}", failures.len(), failures.join("\n"));
}
