//! GOST `metadata` maps: free-form keys, matched without regard to case as GOST does, taken
//! one by one by the code that understands them; whatever is left is an error naming its path.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::Bad;

/// A `metadata:` map as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Metadata(pub serde_yaml_ng::Mapping);

/// Metadata entries gathered from one or more places (a service's, its handler's, its
/// listener's), each with the path it was written at.
#[derive(Debug, Default)]
pub struct Meta {
    entries: Vec<(String, String, Value)>,
}

impl Meta {
    /// The entries of `md`, written at `path` (`services[0].handler.metadata`).
    pub fn of(path: &str, md: &Metadata) -> Result<Meta, Bad> {
        let mut meta = Meta::default();
        meta.add(path, md)?;
        Ok(meta)
    }

    /// Adds the entries of `md`, written at `path`.
    pub fn add(&mut self, path: &str, md: &Metadata) -> Result<(), Bad> {
        for (k, v) in &md.0 {
            let key = scalar(k).ok_or_else(|| (path.to_owned(), "a metadata key must be a string".to_owned()))?;
            self.entries.push((format!("{path}.{key}"), key, v.clone()));
        }
        Ok(())
    }

    /// Where the first of `keys` present was written, if it is.
    pub fn path_of(&self, keys: &[&str]) -> Option<String> {
        self.entries.iter().find(|(_, k, _)| keys.iter().any(|want| k.eq_ignore_ascii_case(want))).map(|e| e.0.clone())
    }

    /// Takes the value of the first of `keys` present (aliases such as `tunnel.id`/`tunnelID`),
    /// with its path. The same key in two places is an error.
    pub fn take(&mut self, keys: &[&str]) -> Result<Option<(String, Value)>, Bad> {
        let mut found: Vec<(String, Value)> = Vec::new();
        self.entries.retain(|(path, k, v)| {
            let hit = keys.iter().any(|want| k.eq_ignore_ascii_case(want));
            if hit {
                found.push((path.clone(), v.clone()));
            }
            !hit
        });
        match found.len() {
            0 | 1 => Ok(found.pop()),
            _ => Err((found[1].0.clone(), format!("given twice (also at {})", found[0].0))),
        }
    }

    /// Takes a string (a number or a boolean is taken as written).
    pub fn take_str(&mut self, keys: &[&str]) -> Result<Option<String>, Bad> {
        Ok(self.take_str_at(keys)?.map(|(_, s)| s))
    }

    /// Takes a string with the path it was written at.
    pub fn take_str_at(&mut self, keys: &[&str]) -> Result<Option<(String, String)>, Bad> {
        match self.take(keys)? {
            None => Ok(None),
            Some((path, v)) => match scalar(&v) {
                Some(s) => Ok(Some((path, s))),
                None => Err((path, "expected a string".to_owned())),
            },
        }
    }

    /// Takes a string or a list of strings, with the path it was written at.
    pub fn take_strings_at(&mut self, keys: &[&str]) -> Result<Option<(String, Vec<String>)>, Bad> {
        let Some((path, v)) = self.take(keys)? else { return Ok(None) };
        let items = match &v {
            Value::Sequence(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
            one => scalar(one).map(|s| vec![s]),
        };
        match items {
            Some(items) => Ok(Some((path, items))),
            None => Err((path, "expected a string or a list of strings".to_owned())),
        }
    }

    /// Takes a boolean: `true`/`false`, also as strings, as GOST reads them.
    pub fn take_bool(&mut self, keys: &[&str]) -> Result<Option<bool>, Bad> {
        match self.take(keys)? {
            None => Ok(None),
            Some((path, v)) => match &v {
                Value::Bool(b) => Ok(Some(*b)),
                Value::String(s) => crate::url::parse_bool(s).map(Some).map_err(|e| (path, e)),
                _ => Err((path, "expected true or false".to_owned())),
            },
        }
    }

    /// Takes a duration: `5s`, `1m30s`, or a number of seconds as GOST reads one.
    pub fn take_duration(&mut self, keys: &[&str]) -> Result<Option<Duration>, Bad> {
        match self.take(keys)? {
            None => Ok(None),
            Some((path, v)) => duration(&v).map(Some).map_err(|e| (path, e)),
        }
    }

    /// Takes a whole number that fits `T`.
    pub fn take_number<T: std::str::FromStr>(&mut self, keys: &[&str]) -> Result<Option<T>, Bad> {
        match self.take(keys)? {
            None => Ok(None),
            Some((path, v)) => {
                let text = scalar(&v).unwrap_or_default();
                text.parse::<T>().map(Some).map_err(|_| (path, format!("{text:?}: expected a whole number in range")))
            }
        }
    }

    /// Rejects whatever is left; `takes` lists the keys that place supports.
    pub fn finish(self, takes: &str) -> Result<(), Bad> {
        match self.entries.into_iter().next() {
            None => Ok(()),
            Some((path, _, _)) => Err((path, format!("not supported here (this place takes: {takes})"))),
        }
    }
}

/// A scalar as text; `None` for a list, a map or null.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A duration written `5s` or as a number of seconds.
pub fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e} (write 5s, 1m30s)")),
        Value::Number(n) => {
            n.as_u64().map(Duration::from_secs).ok_or_else(|| format!("{n}: expected a whole number of seconds"))
        }
        _ => Err("expected a duration such as 5s".to_owned()),
    }
}
