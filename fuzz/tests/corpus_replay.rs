//! Replays every checked-in fuzz corpus through its target, as an ordinary
//! test on stable Rust: `cargo test -p hvmem-fuzz --test corpus_replay`.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::fs;
use std::path::Path;

/// The targets and their entry points. A target without a corpus directory,
/// or with an empty one, fails: a replay that replays nothing proves nothing.
const TARGETS: &[(&str, Target)] = &[
    ("balloon", hvmem_fuzz::balloon::run),
    ("buddy", hvmem_fuzz::buddy::run),
    ("frametable", hvmem_fuzz::frametable::run),
    ("grant", hvmem_fuzz::grant::run),
    ("host", hvmem_fuzz::host::run),
    ("pagetable_ops", hvmem_fuzz::pagetable_ops::run),
    ("pagetable_walk", hvmem_fuzz::pagetable_walk::run),
    ("pv_mmu_update", hvmem_fuzz::pv_mmu_update::run),
    ("tmem", hvmem_fuzz::tmem::run),
];

/// A target's entry point.
type Target = fn(&[u8]);

fn replay(name: &str, run: Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in &entries {
        let data = fs::read(path).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
            eprintln!("{name}: input {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
    entries.len()
}

#[test]
fn every_corpus_input_passes_its_target() {
    for &(name, run) in TARGETS {
        let n = replay(name, run);
        assert!(n > 0, "corpus of {name} is empty");
        println!("{name}: {n} inputs replayed");
    }
}
