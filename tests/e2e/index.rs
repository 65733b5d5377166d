//! A damaged cache index: `index.db` cut short, or its first 4 KiB overwritten with
//! garbage, as a full disk or a stray write would leave it. The next kiln command moves
//! it aside, starts a new one with one warning naming where the old one went, and builds
//! right (the blobs are still there; results are misses until they are stored again);
//! `kiln cache verify` says when the index was rebuilt.

use std::path::{Path, PathBuf};

use crate::support::{workspace, Workspace};

const BUILD: &str = r#"
[genrule.words]
outs = ["words.txt"]
cmd = "printf 'one\ntwo\nthree\n' > $OUT"

[genrule.count]
srcs = [":words"]
outs = ["count.txt"]
cmd = "wc -l < $SRCS > $OUT"
tools = ["wc"]
"#;

/// A workspace built once, its cache holding both results.
fn built() -> Workspace {
    let ws = workspace().file("BUILD.toml", BUILD).build();
    let run = ws.kiln(&["build"]);
    run.assert_ok();
    assert_eq!(run.counts(), (2, 0, 2, 0));
    ws
}

fn truncate(index: &Path) {
    let len = std::fs::metadata(index).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(index).unwrap();
    file.set_len(len / 2).unwrap();
}

fn overwrite_head(index: &Path) {
    let mut bytes = std::fs::read(index).unwrap();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let n = garbage.len().min(bytes.len());
    bytes[..n].copy_from_slice(&garbage[..n]);
    std::fs::write(index, bytes).unwrap();
}

/// The files a rebuild moved aside: `index.db.damaged-<unix time>` (and its -wal/-shm).
fn moved_aside(cache: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("index.db.damaged-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .collect();
    found.sort();
    found
}

fn damaged_index_is_moved_aside_and_rebuilt(damage: fn(&Path)) {
    let ws = built();
    let index = ws.cache.join("index.db");
    let before = std::fs::read(&index).unwrap();
    damage(&index);
    // Without its outputs the build cannot take the no-op fast path (which does not
    // open the index at all).
    std::fs::remove_dir_all(ws.path("kiln-out")).unwrap();

    let run = ws.kiln(&["build"]);
    run.assert_ok();
    assert_eq!(ws.read("kiln-out/words.txt"), "one\ntwo\nthree\n");
    assert_eq!(ws.read("kiln-out/count.txt").trim(), "3");
    let (total, _, _, failed) = run.counts();
    assert_eq!((total, failed), (2, 0), "{}", run.stderr);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    let aside = moved_aside(&ws.cache);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(warnings.len(), 1, "one warning:\n{}", run.stderr);
    assert!(
        warnings[0].contains(&aside[0].display().to_string()),
        "the warning names {}: {}",
        aside[0].display(),
        warnings[0]
    );
    assert_ne!(
        std::fs::read(&aside[0]).unwrap(),
        before,
        "the damaged file, kept"
    );

    // The new index holds the results again: the next build runs nothing, quietly.
    std::fs::remove_dir_all(ws.path("kiln-out")).unwrap();
    let again = ws.kiln(&["build"]);
    again.assert_ok();
    assert_eq!(again.counts(), (2, 2, 0, 0), "{}", again.stderr);
    assert!(!again.stderr.contains("warning"), "{}", again.stderr);

    let verify = ws.kiln(&["cache", "verify"]);
    verify.assert_ok();
    let line = verify
        .stdout
        .lines()
        .find(|l| l.contains("rebuilt"))
        .unwrap_or_else(|| panic!("verify reports the rebuild:\n{}", verify.stdout));
    assert!(line.contains(&aside[0].display().to_string()), "{line}");
    let year = line.split_whitespace().find(|w| w.starts_with("20"));
    assert!(year.is_some(), "says when: {line}");
}

#[test]
fn a_truncated_index_is_moved_aside_and_rebuilt() {
    damaged_index_is_moved_aside_and_rebuilt(truncate);
}

#[test]
fn an_index_with_a_garbage_head_is_moved_aside_and_rebuilt() {
    damaged_index_is_moved_aside_and_rebuilt(overwrite_head);
}
