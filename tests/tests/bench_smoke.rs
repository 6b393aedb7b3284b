//! The benchmark harness cannot rot: `bench/run --smoke` runs its shortest cases (direct and
//! relay:// only, a 1-second iperf3 and a 1-second wrk run, 20 held visitor connections) on
//! the debug binaries this `cargo test` built, with no install, no release build and no peer
//! tunnels, and must print the table with both rows. The figures are not checked: tests run
//! in parallel here, so they mean nothing. Needs bash, python3, iperf3 and wrk.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The smoke run takes about ten seconds; this bound only keeps a broken run from hanging.
const DEADLINE: Duration = Duration::from_secs(120);

fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(found, "the benchmark smoke test needs {tool}: apt-get install {package} (CI installs it)");
}

/// The markdown row of `label` in the table that follows `heading`.
fn row<'a>(table: &'a str, heading: &str, label: &str) -> &'a str {
    let section = table.split(heading).nth(1).unwrap_or_else(|| panic!("no {heading:?} table in:\n{table}"));
    let section = section.split("\n#### ").next().unwrap_or_default();
    section
        .lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("no {label:?} row under {heading:?} in:\n{table}"))
}

/// The leading number of a cell such as `9.99 (9.1–10.2) ×0.28 †`.
fn number(cell: &str) -> f64 {
    let first = cell.split_whitespace().next().unwrap_or_default();
    first.parse().unwrap_or_else(|_| panic!("cell {cell:?} has no figure"))
}

fn cells(row: &str) -> Vec<&str> {
    row.trim().trim_matches('|').split('|').map(str::trim).skip(1).collect()
}

#[test]
fn bench_run_smoke_prints_the_table() {
    for (tool, package) in [("bash", "bash"), ("python3", "python3"), ("iperf3", "iperf3"), ("wrk", "wrk")] {
        require(tool, package);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let bin_dir = tunnel_tests::bin("tunnel-server").parent().expect("binary directory").to_path_buf();
    tunnel_tests::bin("tunnel-agent");
    let out = tempfile::tempdir().expect("tempdir");
    let (stdout_path, stderr_path) = (out.path().join("stdout"), out.path().join("stderr"));

    let mut child = Command::new("bash")
        .arg(root.join("bench/run"))
        .args(["--smoke", "--out"])
        .arg(out.path())
        .env("TUNNEL_BIN_DIR", &bin_dir)
        .env_remove("RUST_LOG")
        .env_remove("TUNNEL_TOKEN")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        // Its own process group, so that a run past the deadline is killed with everything
        // it started.
        .process_group(0)
        .spawn()
        .expect("start bench/run");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            panic!(
                "bench/run --smoke did not finish within {DEADLINE:?}; stderr:\n{}",
                fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "bench/run --smoke failed ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}");

    let table = fs::read_to_string(out.path().join("latest.md")).expect("bench/run wrote latest.md");
    assert_eq!(stdout, table, "the table printed is the table written");
    assert!(out.path().join("latest.json").exists(), "raw results written");

    let throughput = "#### Throughput";
    let http = "#### HTTP";
    let resources = "#### Resources";
    for label in ["direct", "relay://"] {
        let r = row(&table, throughput, label);
        let c = cells(r);
        assert!(number(c[0]) > 0.0, "no iperf3 figure for {label}: {r}");
        let r = row(&table, http, label);
        let c = cells(r);
        assert!(number(c[0]) > 0.0 && number(c[2]) > 0.0, "no wrk figures for {label}: {r}");
    }
    // Ratios to direct, and the memory case with its held connections.
    assert!(row(&table, throughput, "relay://").contains('×'), "no ratio to direct:\n{table}");
    let r = row(&table, resources, "relay://");
    assert!(number(cells(r)[1]) > 0.0, "no RSS with held visitors: {r}");
    assert!(!r.contains('!'), "held visitor connections failed:\n{table}");
}
