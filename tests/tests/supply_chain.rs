//! The workspace's `Cargo.lock` pins no dependency below a version known to fix a
//! peer-triggerable bug: yamux 0.13.10 (a panic on oversized frames), quinn-proto 0.11.15 and
//! rustls 0.23.5 (each a remotely triggerable panic or denial of service in older releases).

use semver::Version;

/// Each package and the lowest version allowed.
const MINIMUMS: &[(&str, &str)] = &[("yamux", "0.13.10"), ("quinn-proto", "0.11.15"), ("rustls", "0.23.5")];

/// Every locked version of `name` in a `Cargo.lock` text.
fn locked_versions(lock: &toml::Table, name: &str) -> Result<Vec<Version>, String> {
    let packages = lock.get("package").and_then(|p| p.as_array()).ok_or("Cargo.lock has no [[package]] list")?;
    let mut found = Vec::new();
    for p in packages.iter().filter(|p| p.get("name").and_then(|n| n.as_str()) == Some(name)) {
        let raw = p.get("version").and_then(|v| v.as_str()).ok_or(format!("{name}: a lock entry without a version"))?;
        found.push(Version::parse(raw).map_err(|e| format!("{name}: locked version {raw:?}: {e}"))?);
    }
    Ok(found)
}

/// Every problem with `lock_text` against `minimums`, one message each.
fn check(lock_text: &str, minimums: &[(&str, &str)]) -> Vec<String> {
    let lock: toml::Table = match toml::from_str(lock_text) {
        Ok(t) => t,
        Err(e) => return vec![format!("Cargo.lock does not parse: {e}")],
    };
    let mut problems = Vec::new();
    for &(name, min) in minimums {
        let min = Version::parse(min).expect("minimum versions are valid");
        match locked_versions(&lock, name) {
            Err(e) => problems.push(e),
            Ok(versions) if versions.is_empty() => problems.push(format!("{name}: not in Cargo.lock")),
            Ok(versions) => problems.extend(
                versions
                    .iter()
                    .filter(|v| **v < min)
                    .map(|v| format!("{name}: locked at {v}, below the minimum {min}")),
            ),
        }
    }
    problems
}

#[test]
fn workspace_lock_meets_the_minimum_versions() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let problems = check(&text, MINIMUMS);
    assert!(problems.is_empty(), "Cargo.lock:\n{}", problems.join("\n"));
}

fn lock(entries: &[(&str, &str)]) -> String {
    let mut text = String::from("version = 4\n");
    for (name, version) in entries {
        text.push_str(&format!(
            "\n[[package]]\nname = \"{name}\"\nversion = \"{version}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
        ));
    }
    text
}

#[test]
fn versions_below_the_minimum_fail() {
    let ok = lock(&[("yamux", "0.14.1"), ("quinn-proto", "0.11.15"), ("rustls", "0.23.46")]);
    assert_eq!(check(&ok, MINIMUMS), Vec::<String>::new());

    let old = lock(&[("yamux", "0.13.9"), ("quinn-proto", "0.11.14"), ("rustls", "0.23.4")]);
    assert_eq!(
        check(&old, MINIMUMS),
        [
            "yamux: locked at 0.13.9, below the minimum 0.13.10",
            "quinn-proto: locked at 0.11.14, below the minimum 0.11.15",
            "rustls: locked at 0.23.4, below the minimum 0.23.5",
        ]
    );

    // Versions compare as versions, not as text ("0.13.9" > "0.13.10" as strings).
    let text_order = lock(&[("yamux", "0.13.10"), ("quinn-proto", "0.11.100"), ("rustls", "0.23.10")]);
    assert_eq!(check(&text_order, MINIMUMS), Vec::<String>::new());

    // An old copy beside a new one still fails; a pre-release of the minimum is below it.
    let two = lock(&[("yamux", "0.12.1"), ("yamux", "0.14.1"), ("quinn-proto", "0.11.15-rc.1"), ("rustls", "0.23.5")]);
    let problems = check(&two, MINIMUMS);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("yamux: locked at 0.12.1") && problems[1].contains("quinn-proto"), "{problems:?}");
}

#[test]
fn a_missing_package_or_a_broken_lock_fails() {
    let missing = lock(&[("yamux", "0.14.1"), ("rustls", "0.23.46")]);
    assert_eq!(check(&missing, MINIMUMS), ["quinn-proto: not in Cargo.lock"]);
    assert!(check("[[package]\n", MINIMUMS)[0].contains("does not parse"));
    let bad = lock(&[("yamux", "zero"), ("quinn-proto", "0.11.15"), ("rustls", "0.23.5")]);
    assert!(check(&bad, MINIMUMS)[0].starts_with("yamux: locked version \"zero\""));
}
