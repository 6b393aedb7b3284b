//! The bodies of the fuzz targets in `fuzz/fuzz_targets/`, as ordinary functions.
//!
//! Each target there is one line that calls the function of the same name here, and
//! `tests/fuzz_corpus.rs` calls the same function on every committed corpus and regression
//! input, so what the fuzzer checked and what `cargo test` replays cannot drift apart. A body
//! returns normally for any input the code under test handles correctly, and panics (an
//! `assert!`) when a property of that code is broken: a decoder that panics, a partial frame
//! that is consumed, a decoded frame that does not survive re-encoding, a sniffed hostname that
//! is not canonical, a validated configuration that breaks its own limits.

use std::path::{Path, PathBuf};

mod config;
mod path;
mod sniff;
mod url;
mod wire;

pub use config::{access_config, access_urls, agent_config, agent_urls, server_config, server_url};
pub use path::{path_normalize, path_protection};
pub use sniff::{http_sniff, tls_sniff};
pub use url::{host, url};
pub use wire::{frame, hello, stream_header};

/// A fuzz target body.
pub type Body = fn(&[u8]);

/// Every fuzz target, by the name of its file in `fuzz/fuzz_targets/` and its corpus folder.
pub const TARGETS: &[(&str, Body)] = &[
    ("frame", frame),
    ("hello", hello),
    ("stream_header", stream_header),
    ("http_sniff", http_sniff),
    ("tls_sniff", tls_sniff),
    ("url", url),
    ("host", host),
    ("server_config", server_config),
    ("agent_config", agent_config),
    ("access_config", access_config),
    ("server_url", server_url),
    ("agent_urls", agent_urls),
    ("access_urls", access_urls),
    ("path_normalize", path_normalize),
    ("path_protection", path_protection),
];

/// The `fuzz/` folder of the workspace.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

/// Every file of `dir` (sorted by name), with its contents. A missing or empty folder is an
/// error: a corpus that silently vanished would make its replay test pass without testing.
pub fn inputs(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let found = files(dir)?;
    if found.is_empty() {
        return Err(format!("{}: no inputs", dir.display()));
    }
    Ok(found)
}

/// Every file of the folders that exist among `dirs`, with its contents; these may be empty.
pub fn inputs_if_present(dirs: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let mut all = Vec::new();
    for dir in dirs.iter().filter(|d| d.exists()) {
        all.extend(files(dir)?);
    }
    Ok(all)
}

fn files(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| std::fs::read(&p).map(|data| (p.clone(), data)).map_err(|e| format!("{}: {e}", p.display())))
        .collect()
}
