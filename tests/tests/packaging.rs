//! What ships: the Helm chart (`deploy/helm/tunnel`) and the Debian package (`cargo deb`).
//! Both checks use the real tools, which `tests/run` installs: helm-python-sdk and
//! kubernetes-validate in a virtualenv under `target/`, cargo-deb, dpkg and systemd-analyze. A
//! missing tool fails the test with what to run; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use tunnel_tests::bin;

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The Python of the tools virtualenv (`TUNNEL_TOOLS_VENV`, else `target/tools-venv`).
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("TUNNEL_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/tools-venv"));
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
        .arg(workspace().join("tests/helm/check_chart.py"))
        .arg(workspace().join("deploy/helm/tunnel"))
        .arg(&bin_dir)
        .arg(workspace().join("tests/helm/refused"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run check_chart.py");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the chart check failed:\n{text}");
    assert!(text.contains("; 0 problems"), "{text}");
}

/// Runs `cmd`, asserting success; returns stdout and stderr together.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The package `tests/run` built (`cargo deb --no-build` of the release binaries).
fn built_deb() -> PathBuf {
    let dir = workspace().join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    debs.retain(|p| {
        p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tunnel_"))
            && p.extension().is_some_and(|e| e == "deb")
    });
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no tunnel_*.deb in {}: run tests/run (it builds the release binaries and runs cargo deb)",
            dir.display()
        )
    })
}

/// The package is unpacked with `dpkg -x` (files) and `dpkg -e` (control and maintainer
/// scripts) into a throwaway root rather than installed with `dpkg -i` on this machine, whose
/// system it would change (a user, /usr/bin, units). The root also gets what the units refer
/// to from a Debian base system (the usr-merged /bin, kill, systemd's own units), so
/// `systemd-analyze verify --root` checks the installed units as a system would load them.
#[test]
fn the_debian_package_unpacks_to_units_that_verify_a_user_and_a_server_that_checks() {
    let deb = built_deb();
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for field in ["Package: tunnel", "Depends:", "Section: net"] {
        assert!(info.contains(field), "control lacks {field:?}:\n{info}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
    run(Command::new("dpkg").arg("-e").arg(&deb).arg(root.join("DEBIAN")));
    let units = root.join("usr/lib/systemd/system");
    for file in [
        "usr/bin/tunnel-server",
        "usr/bin/tunnel-agent",
        "usr/bin/tunnel-access",
        "etc/tunnel/server.toml",
        "usr/lib/systemd/system/tunnel-server.service",
        "usr/lib/systemd/system/tunnel-agent@.service",
        "usr/lib/systemd/system/tunnel-access@.service",
        "usr/lib/sysusers.d/tunnel.conf",
    ] {
        assert!(root.join(file).exists(), "the package lacks /{file}");
    }
    let conffiles = std::fs::read_to_string(root.join("DEBIAN/conffiles")).unwrap_or_default();
    assert!(conffiles.contains("/etc/tunnel/server.toml"), "server.toml is not a conffile: {conffiles:?}");
    // The maintainer scripts: valid shell, creating the user and registering the units.
    let postinst = std::fs::read_to_string(root.join("DEBIAN/postinst")).expect("postinst");
    assert!(postinst.contains("systemd-sysusers") && postinst.contains("deb-systemd-helper"), "{postinst}");
    for script in ["postinst", "prerm", "postrm"] {
        let path = root.join("DEBIAN").join(script);
        if path.exists() {
            run(Command::new("sh").arg("-n").arg(&path));
        }
    }
    // The system user, made by systemd-sysusers as postinst calls it, in the throwaway root.
    let sysusers = postinst.lines().find(|l| l.contains("systemd-sysusers")).expect("the sysusers line").trim();
    assert!(sysusers.ends_with(" tunnel.conf"), "{sysusers}");
    run(Command::new("systemd-sysusers").arg(format!("--root={}", root.display())).arg("tunnel.conf"));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("etc/passwd");
    assert!(passwd.lines().any(|l| l.starts_with("tunnel:")), "no tunnel user:\n{passwd}");

    // What the units refer to, from this machine's Debian base.
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).expect("usr-merged /bin");
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).expect("usr-merged /lib");
    std::fs::copy("/usr/bin/kill", root.join("usr/bin/kill")).expect("copy kill");
    for entry in std::fs::read_dir("/lib/systemd/system").expect("systemd's units") {
        let entry = entry.expect("entry");
        let to = units.join(entry.file_name());
        if !to.exists() && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), to).expect("copy a systemd unit");
        }
    }
    let server_unit = std::fs::read_to_string(units.join("tunnel-server.service")).expect("unit");
    for hardening in [
        "User=tunnel",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=tunnel-server",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(server_unit.contains(hardening), "tunnel-server.service lacks {hardening}");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(["tunnel-server.service", "tunnel-agent@home.service", "tunnel-access@home.service"])
        .output()
        .expect("run systemd-analyze (Debian package systemd)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify:\n{text}");

    // The installed server checks the packaged example configuration, and is this build.
    let server = root.join("usr/bin/tunnel-server");
    let state = dir.path().join("state");
    let check = run(Command::new(&server)
        .arg(format!("--config={}", root.join("etc/tunnel/server.toml").display()))
        .arg("--check")
        .env("TUNNEL_STATE_DIR", &state)
        .env_remove("RUST_LOG"));
    assert!(check.contains("configuration is valid"), "{check}");
    let version = run(Command::new(&server).arg("--version"));
    let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(workspace()).output();
    if let Some(head) = head.ok().filter(|o| o.status.success()) {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        assert!(version.contains(&head), "the package is older than HEAD {head}: run tests/run again\n{version}");
    }
    for name in ["tunnel-agent", "tunnel-access"] {
        let help = run(Command::new(root.join("usr/bin").join(name)).arg("--help"));
        assert!(help.contains("--config"), "{help}");
    }
}
