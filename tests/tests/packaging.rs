//! What ships: the Helm chart (`deploy/helm/tunnel`) and the Debian package (`cargo deb`).
//! Both checks use the real tools, which `tests/run` installs: helm-python-sdk and
//! kubernetes-validate in a virtualenv under `target/`, cargo-deb, dpkg and systemd-analyze. A
//! missing tool fails the test with what to run; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use tunnel_tests::bin;

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The Python of the tools virtualenv (`TUNNEL_TOOLS_VENV`, else `target/tools-venv`).
fn venv_python() -> PathBuf {
    let venv =
        std::env::var_os("TUNNEL_TOOLS_VENV").map(PathBuf::from).unwrap_or_else(|| root().join("target/tools-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/run, which makes the virtualenv with helm-python-sdk and kubernetes-validate",
        python.display()
    );
    python
}

#[test]
fn the_helm_chart_lints_renders_validates_and_its_configurations_pass_check() {
    let bin_dir = bin("tunnel-server").parent().expect("bin dir").to_path_buf();
    let out = Command::new(venv_python())
        .arg(root().join("tests/helm/check_chart.py"))
        .arg(root().join("deploy/helm/tunnel"))
        .arg(&bin_dir)
        .arg(root().join("tests/helm/refused"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run check_chart.py");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the chart check failed:\n{text}");
    assert!(text.contains("; 0 problems"), "{text}");
}
