//! What the three binaries' configuration loaders share: the error type that names the file
//! or URL, the key and the reason, and TOML loading.
//!
//! No error here repeats a configured value that may be secret: a TOML error gives the file,
//! line, column and what is wrong, never the offending line (it may hold a token), and URL
//! errors show the URL with its token replaced by `***` ([`crate::url`]).

use serde::de::DeserializeOwned;

use crate::url::UrlError;

/// Why a configuration was rejected. The message names the source and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad command-line URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A file that cannot be read or parsed.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// A value that parsed but is not acceptable.
    #[error("{source_name}: {key}: {why}")]
    Invalid {
        /// The file or URL.
        source_name: String,
        /// The offending key.
        key: String,
        /// Why.
        why: String,
    },
}

/// Reads and parses a TOML file; unknown keys are errors where the target type says so.
pub fn load_toml<T: DeserializeOwned>(path: &str) -> Result<T, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::File { path: path.to_owned(), why: e.to_string() })?;
    toml::from_str(&text).map_err(|e| {
        let mut why = describe(&text, &e);
        if looks_like_yaml(&text) {
            why.push_str(" (this looks like a GOST YAML file: name it .yaml or .yml to read it as one)");
        }
        ConfigError::File { path: path.to_owned(), why }
    })
}

/// Whether TOML that failed to parse looks like a GOST YAML file instead: its first line
/// that is not blank or a comment opens `services:`, `chains:` or `ingresses:`.
pub fn looks_like_yaml(text: &str) -> bool {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
    first.is_some_and(|l| {
        ["services", "chains", "ingresses"]
            .iter()
            .any(|k| l.strip_prefix(k).is_some_and(|r| r.trim_start().starts_with(':')))
    })
}

/// A TOML error as `line L, column C: message`. The `toml` crate's own `Display` quotes the
/// offending line, which may be the one holding a token, so only its message is kept.
fn describe(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end();
    match err.span() {
        Some(span) => {
            let (line, column) = position(text, span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct File {
        addr: String,
        token: crate::Secret,
    }

    fn load(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        load_toml::<File>(path.to_str().unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn errors_give_the_place_not_the_line() {
        let err = load("addr = \":1\"\ntoken = \"hunter2\n");
        assert!(err.contains("c.toml: line 2, column 17: "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = load("addr = \":1\"\n  token = 'hunter2' x\n");
        assert!(err.contains("line 2, column 21"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = load("addr = \":1\"\ntoken = 1234567\n");
        assert!(err.contains("line 2, column 9") && !err.contains("1234567"), "{err}");
    }

    #[test]
    fn a_gost_yaml_file_named_otherwise_gets_a_hint() {
        let err = load("# a GOST file\nservices:\n- name: service-0\n  addr: :8443\n");
        assert!(err.contains("name it .yaml or .yml"), "{err}");
        let err = load("addr = \":1\"\ntoken = \"hunter2\n");
        assert!(!err.contains(".yaml"), "{err}");
    }

    #[test]
    fn positions() {
        assert_eq!(position("ab\ncd", 0), (1, 1));
        assert_eq!(position("ab\ncd", 4), (2, 2));
        assert_eq!(position("é\nx", 1), (1, 1));
        assert_eq!(position("ab", 99), (1, 3));
    }
}
