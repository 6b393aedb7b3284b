//! The PID file: written once every listener is up, removed when the server exits cleanly, so
//! `kill $(cat FILE)` starts the graceful shutdown of the process that wrote it.

use std::io;
use std::path::{Path, PathBuf};

/// A written PID file; dropping it removes the file if it still names this process.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes this process's ID to `path` (through a temporary file and a rename, so a reader
    /// never sees a partial file). A file naming another running process is replaced, with
    /// a warning: processes sharing a port with `reuse` each need their own PID file.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        let pid = std::process::id();
        if let Some(other) = read_pid(path).filter(|&p| p != pid && is_running(p)) {
            tracing::warn!(path = %path.display(), other, "PID file names another running process; replacing it");
        }
        let name =
            path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "PID file has no name"))?;
        let tmp = path.with_file_name(format!(".{}.{pid}.tmp", name.to_string_lossy()));
        std::fs::write(&tmp, format!("{pid}\n"))?;
        if let Err(err) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
        tracing::info!(path = %path.display(), pid, "PID file written");
        Ok(PidFile { path: path.to_owned(), pid })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path) == Some(self.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_running(pid: u32) -> bool {
    cfg!(target_os = "linux") && Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_removed_and_another_process_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.pid");
        let file = PidFile::create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", std::process::id()));
        drop(file);
        assert!(!path.exists(), "removed at exit");

        let file = PidFile::create(&path).unwrap();
        std::fs::write(&path, "1\n").unwrap(); // another process took the file over
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n", "not ours any more: kept");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
