//! Replays the committed fuzz corpus as ordinary tests, so CI needs no fuzzer: for each target
//! of `fuzz/fuzz_targets/`, every file of `fuzz/corpus/<target>/` (which must exist and not be
//! empty) and of `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` (where present) runs
//! through the same body the fuzzer ran.

use std::path::PathBuf;

use tunnel_tests::fuzzing::{self, fuzz_dir, inputs, inputs_if_present, Body};

fn replay(target: &str, body: Body) {
    let dir = fuzz_dir();
    let mut all = inputs(&dir.join("corpus").join(target)).unwrap_or_else(|e| panic!("corpus of {target}: {e}"));
    let extra = [dir.join("seeds").join(target), dir.join("regressions").join(target)];
    all.extend(inputs_if_present(&extra).unwrap_or_else(|e| panic!("inputs of {target}: {e}")));
    for (path, data) in &all {
        if std::panic::catch_unwind(|| body(data)).is_err() {
            panic!("{target}: {} fails (replay it with `cargo fuzz run -s none {target} {0}`)", path.display());
        }
    }
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), fuzzing::$name);
            }
        )*
        const REPLAYED: &[&str] = &[$(stringify!($name)),*];
    };
}

replay_tests!(
    frame,
    hello,
    stream_header,
    http_sniff,
    tls_sniff,
    url,
    host,
    server_config,
    agent_config,
    access_config,
    server_url,
    agent_urls,
    access_urls,
    path_normalize,
    path_protection,
);

/// Every file of `fuzz/fuzz_targets/` is a target listed in the harness and replayed here.
#[test]
fn every_fuzz_target_is_replayed() {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().expect("file name").to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = fuzzing::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    let mut replayed: Vec<String> = REPLAYED.iter().map(|n| n.to_string()).collect();
    replayed.sort();
    assert_eq!(on_disk, listed, "fuzz_targets/ and fuzzing::TARGETS differ");
    assert_eq!(replayed, listed, "a target is not replayed");
}

/// A corpus folder that is missing or empty fails its replay instead of passing vacuously.
#[test]
fn missing_or_empty_corpus_is_an_error() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let missing: PathBuf = tmp.path().join("nothing-here");
    assert!(inputs(&missing).is_err());
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("create folder");
    assert!(inputs(&empty).unwrap_err().contains("no inputs"));
    std::fs::write(empty.join("one"), b"x").expect("write input");
    assert_eq!(inputs(&empty).expect("one input").len(), 1);
}

/// A body that panics on an input makes the replay fail.
#[test]
#[should_panic(expected = "fails")]
fn a_failing_input_fails_the_replay() {
    replay("frame", |_| panic!("this input breaks the target"));
}
