//! Certificates from the operator's files: read at start (a bad one stops the start), then
//! read again on a reload and whenever a file changes (a bad one is logged and the
//! certificate it replaced goes on serving).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::certs::{Certificate, Store};
use super::config::EdgeConfig;

/// How often the files are looked at for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate file and its key file.
type Pair = (PathBuf, PathBuf);

/// What a file looked like when read: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

/// The configured files and what was last read from them.
#[derive(Default)]
pub struct Files {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    listed: Vec<Pair>,
    dir: Option<PathBuf>,
    /// Per pair: the stamps it had when read, and its certificate.
    read: HashMap<Pair, (Stamp, Stamp, Arc<Certificate>)>,
}

impl Files {
    /// Reads every configured file at start; the first bad one is the error.
    pub fn load(config: &EdgeConfig, store: &Store) -> Result<Files, String> {
        let files = Files::default();
        {
            let mut state = files.state.lock().expect("files lock");
            state.listed = config.files.clone();
            state.dir = config.cert_dir.clone();
            for pair in state.pairs() {
                let cert = read(&pair).map_err(|e| format!("{}: {e}", pair.0.display()))?;
                state.read.insert(pair.clone(), (stamp(&pair.0), stamp(&pair.1), Arc::new(cert)));
            }
            store.set_files(state.read.values().map(|r| r.2.clone()).collect());
            for (_, _, cert) in state.read.values() {
                tracing::info!(names = ?cert.names, file = %cert.origin, expires_in_days = cert.expires_in() / 86400, "certificate loaded");
            }
        }
        Ok(files)
    }

    /// Takes a reloaded configuration's files and reads what changed.
    pub fn reconfigure(&self, config: &EdgeConfig, store: &Store) {
        {
            let mut state = self.state.lock().expect("files lock");
            state.listed = config.files.clone();
            state.dir = config.cert_dir.clone();
        }
        self.refresh(store);
    }

    /// Reads the files that changed since they were last read, and those new in the
    /// directory; forgets those gone. Returns whether the store changed.
    pub fn refresh(&self, store: &Store) -> bool {
        let mut state = self.state.lock().expect("files lock");
        let pairs = state.pairs();
        let mut changed = false;
        let before = state.read.len();
        state.read.retain(|pair, _| pairs.contains(pair));
        changed |= state.read.len() != before;
        for pair in pairs {
            let stamps = (stamp(&pair.0), stamp(&pair.1));
            if let Some((c, k, _)) = state.read.get(&pair) {
                if (c, k) == (&stamps.0, &stamps.1) {
                    continue;
                }
            }
            match read(&pair) {
                Ok(cert) => {
                    tracing::info!(names = ?cert.names, file = %cert.origin, expires_in_days = cert.expires_in() / 86400, "certificate loaded");
                    state.read.insert(pair, (stamps.0, stamps.1, Arc::new(cert)));
                    changed = true;
                }
                Err(err) => {
                    // Logged once per change of the files; the old certificate goes on serving.
                    tracing::warn!(file = %pair.0.display(), %err, "certificate not loaded; the one in force stays");
                    if let Some(entry) = state.read.get_mut(&pair) {
                        (entry.0, entry.1) = stamps;
                    }
                }
            }
        }
        if changed {
            store.set_files(state.read.values().map(|r| r.2.clone()).collect());
        }
        changed
    }

    /// Looks at the files every [`WATCH_INTERVAL`] until `stop`.
    pub async fn watch(self: Arc<Self>, store: Arc<Store>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
                () = stop.cancelled() => return,
            }
            let (files, store) = (self.clone(), store.clone());
            // File system calls off the visitors' threads.
            let _ = tokio::task::spawn_blocking(move || files.refresh(&store)).await;
        }
    }
}

impl State {
    /// The listed pairs, then the directory's.
    fn pairs(&self) -> Vec<Pair> {
        let mut pairs = self.listed.clone();
        if let Some(dir) = &self.dir {
            pairs.extend(dir_pairs(dir));
        }
        pairs
    }
}

/// The certificates of a directory: `NAME.crt` + `NAME.key`, and certbot's
/// `NAME/fullchain.pem` + `NAME/privkey.pem`.
fn dir_pairs(dir: &Path) -> Vec<Pair> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut pairs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (chain, key) = (path.join("fullchain.pem"), path.join("privkey.pem"));
            if chain.is_file() && key.is_file() {
                pairs.push((chain, key));
            }
        } else if path.extension().is_some_and(|e| e == "crt") {
            let key = path.with_extension("key");
            if key.is_file() {
                pairs.push((path, key));
            }
        }
    }
    pairs.sort();
    pairs
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read((cert, key): &Pair) -> Result<Certificate, String> {
    tunnel_runtime::secret::check_private_file(key)?;
    let chain = std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    Certificate::from_pem(&chain, &key_pem, cert.display().to_string())
}
