//! What the three binaries' configuration loaders share: the error type that names the file
//! or URL, the key and the reason, and TOML loading.

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
    toml::from_str(&text)
        .map_err(|e| ConfigError::File { path: path.to_owned(), why: e.to_string().trim_end().to_owned() })
}
