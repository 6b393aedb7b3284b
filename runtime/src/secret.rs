//! Secrets (tokens) that never print: `Debug` and `Display` show `***`, so a secret cannot
//! reach a log line or an error message by accident; deserialization errors do not quote the
//! value either.

use std::fmt;

/// A token or other secret from configuration.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
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
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter2");
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
