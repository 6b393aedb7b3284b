//! Secrets (tokens) that never print: `Debug` and `Display` show `***`, so a secret cannot
//! reach a log line or an error message by accident; deserialization errors do not quote the
//! value either. Secrets on disk (`tokenFile`, a TLS `keyFile`) must be private to their
//! owner, as ssh requires of its keys.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Largest token file read: far above any token, small enough that a wrong path (a log, a
/// device) is refused instead of read whole.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// A token or other secret from configuration.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Reads a secret from a file (a Kubernetes Secret, a systemd credential): the file must
    /// be private to its owner ([`check_private_file`]) and not empty; one trailing newline
    /// (`\n` or `\r\n`) is not part of the secret. Errors name the file, never its content.
    pub fn from_file(path: &str) -> Result<Secret, String> {
        check_private_file(Path::new(path))?;
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read {path}: {e}"))?;
        if bytes.len() as u64 > MAX_TOKEN_FILE {
            return Err(format!("{path} is larger than {MAX_TOKEN_FILE} bytes: not a token file"));
        }
        let text = String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))?;
        let value = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        if value.is_empty() {
            return Err(format!("{path} is empty"));
        }
        Ok(Secret(value.to_owned()))
    }

    /// The secret itself, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Checks that the secret fits a hello's token field.
    pub fn check_token(&self) -> Result<(), String> {
        let max = tunnel_proto::wire::MAX_TOKEN;
        if self.is_empty() || self.len() > max {
            return Err(format!("token must be 1 to {max} bytes"));
        }
        Ok(())
    }
}

/// The token of a `token` / `tokenFile` pair of keys (named `key` and `key_file` in
/// messages): at most one may be given; the file is read, and the token must fit a hello
/// ([`Secret::check_token`]). An error names its key.
pub fn token_or_file(
    token: Option<Secret>,
    file: Option<&str>,
    key: &str,
    key_file: &str,
) -> Result<Option<Secret>, (String, String)> {
    let (token, key) = match (token, file) {
        (Some(_), Some(_)) => return Err((key_file.to_owned(), format!("give either {key} or {key_file}, not both"))),
        (Some(token), None) => (token, key),
        (None, Some(path)) => (Secret::from_file(path).map_err(|why| (key_file.to_owned(), why))?, key_file),
        (None, None) => return Ok(None),
    };
    token.check_token().map_err(|why| (key.to_owned(), why))?;
    Ok(Some(token))
}

/// Refuses a secret file that users other than its owner may read or write (any of the
/// group and other permission bits set), with the command that fixes it. Files in the
/// service's systemd credentials directory (`$CREDENTIALS_DIRECTORY`) are accepted as they
/// are: systemd makes them private to the service with an ACL, which shows as group bits.
pub fn check_private_file(path: &Path) -> Result<(), String> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY");
    check_private_file_in(path, credentials.as_deref().map(Path::new))
}

fn check_private_file_in(path: &Path, credentials: Option<&Path>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 && !is_within(path, credentials) {
            let path = path.display();
            return Err(format!(
                "{path} is accessible by other users (mode {mode:04o}); a secret must be private to its owner: run chmod 600 {path}"
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (meta, credentials);
    Ok(())
}

/// Whether `path` is inside `dir` once both are resolved.
fn is_within(path: &Path, dir: Option<&Path>) -> bool {
    let resolve = |p: &Path| std::fs::canonicalize(p).ok();
    match (resolve(path), dir.and_then(resolve)) {
        (Some(path), Some(dir)) => path.starts_with(dir),
        _ => false,
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        deserializer.deserialize_string(SecretVisitor)
    }
}

/// Takes a string; anything else is an error that names its type but not its value (an
/// unquoted numeric token would otherwise be quoted back).
struct SecretVisitor;

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(E::invalid_type(serde::de::Unexpected::Other("a boolean"), &self))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(E::invalid_type(serde::de::Unexpected::Other("an integer"), &self))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(E::invalid_type(serde::de::Unexpected::Other("an integer"), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(E::invalid_type(serde::de::Unexpected::Other("a float"), &self))
    }

    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(E::invalid_type(serde::de::Unexpected::Other("bytes"), &self))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    fn file(dir: &tempfile::TempDir, name: &str, content: &[u8], mode: u32) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Secret::from_file(&file(&dir, "a", b"hunter2\n", 0o600)).unwrap().expose(), "hunter2");
        assert_eq!(Secret::from_file(&file(&dir, "b", b"hunter2\r\n", 0o400)).unwrap().expose(), "hunter2");
        assert_eq!(Secret::from_file(&file(&dir, "c", b"hunter2", 0o600)).unwrap().expose(), "hunter2");
        for (name, content, mode, want) in [
            ("d", &b"hunter2\n"[..], 0o644, "chmod 600"),
            ("e", b"hunter2", 0o640, "mode 0640"),
            ("f", b"\n", 0o600, "is empty"),
            ("g", b"", 0o600, "is empty"),
            ("h", b"\xffhunter2", 0o600, "not UTF-8"),
        ] {
            let path = file(&dir, name, content, mode);
            let err = Secret::from_file(&path).unwrap_err();
            assert!(err.contains(&path) && err.contains(want) && !err.contains("hunter2"), "{err}");
        }
        let big = file(&dir, "big", &vec![b'x'; MAX_TOKEN_FILE as usize + 1], 0o600);
        assert!(Secret::from_file(&big).unwrap_err().contains("larger than"));
        let missing = dir.path().join("missing").display().to_string();
        assert!(Secret::from_file(&missing).unwrap_err().contains(&missing));
        let credentials = tempfile::tempdir().unwrap();
        let acl = file(&credentials, "token", b"hunter2", 0o440);
        assert!(check_private_file_in(Path::new(&acl), Some(credentials.path())).is_ok());
        assert!(check_private_file_in(Path::new(&acl), Some(dir.path())).is_err());
        assert!(check_private_file_in(Path::new(&acl), None).is_err());
        let err = token_or_file(Some("x".into()), Some("f"), "token", "tokenFile").unwrap_err();
        assert_eq!(err, ("tokenFile".to_owned(), "give either token or tokenFile, not both".to_owned()));
    }

    #[test]
    fn deserializing_never_quotes_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            token: Secret,
        }
        let ok: T = toml::from_str("token = \"hunter2\"").unwrap();
        assert_eq!(ok.token.expose(), "hunter2");
        for text in ["token = 8675309", "token = 86.75309", "token = true"] {
            let err = toml::from_str::<T>(text).unwrap_err();
            assert!(err.message().starts_with("invalid type") && !err.message().contains("8675309"), "{err}");
        }
    }
}
