//! Build facts for `--version`: the commit (`$TUNNEL_COMMIT` when set, as the Dockerfile does
//! for a context without `.git`; else `git rev-parse` in a checkout; else "unknown") and the
//! build date (UTC, from
//! `$SOURCE_DATE_EPOCH` when set, for reproducible builds, else the day this crate was built at
//! this commit).

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-env-changed=TUNNEL_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = std::env::var("TUNNEL_COMMIT").ok().filter(|c| !c.is_empty()).or_else(git_commit);
    println!("cargo:rustc-env=TUNNEL_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    println!("cargo:rustc-env=TUNNEL_BUILD_DATE={}", date(secs));
}

/// The short hash of HEAD; rebuilds when HEAD moves. None outside a git checkout or without git.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD, the branch it names (not every ref: other branches move without changing this
    // build) and packed-refs.
    let branch = git(&["rev-parse", "--symbolic-full-name", "HEAD"]).filter(|b| b.starts_with("refs/"));
    for path in ["HEAD".to_owned(), "packed-refs".to_owned()].into_iter().chain(branch) {
        // Only files that exist: cargo would take a missing one as changed at every build.
        match git(&["rev-parse", "--path-format=absolute", "--git-path", &path]) {
            Some(file) if std::path::Path::new(&file).exists() => println!("cargo:rerun-if-changed={file}"),
            _ => {}
        }
    }
    Some(commit)
}

/// `YYYY-MM-DD` of a Unix time (the civil-from-days conversion of the proleptic Gregorian
/// calendar).
fn date(secs: u64) -> String {
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
