//! Sealed addresses: what `openssl enc -e -aes-256-cbc -a -salt -k SECRET` makes of a target.
//!
//! The line is the base64 of `Salted__`, an 8-byte salt and the AES-256-CBC ciphertext
//! (PKCS#7 padding). The key and IV (32 + 16 bytes) come from the secret and the salt by one
//! of OpenSSL's derivations: `EVP_BytesToKey` with one round of SHA-256 (`-md sha256`, the
//! default since OpenSSL 1.1.0) or of MD5 (`-md md5`, the default before it), or
//! PBKDF2-HMAC-SHA256 (`-pbkdf2`, `-iter N`, 10000 rounds unless told).
//!
//! Pure code: no IO. A PBKDF2 derivation costs milliseconds of CPU, so the caller runs it off
//! the async workers ([`Opener::is_costly`]) and keys derived that way are kept per salt: a
//! sealed address handed to many clients is derived once.

use std::collections::HashMap;
use std::sync::Mutex;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use base64::Engine;
use sha2::digest::Digest;

/// The header `openssl enc -salt` puts before the salt.
pub const MAGIC: &[u8; 8] = b"Salted__";
/// Salt bytes after the header.
const SALT_LEN: usize = 8;
/// AES-256 key plus CBC IV.
const KEY_IV_LEN: usize = 32 + 16;
/// AES block size.
const BLOCK: usize = 16;
/// `openssl enc -pbkdf2` rounds when `-iter` is not given.
pub const DEFAULT_ITER: u32 = 10_000;
/// PBKDF2 rounds accepted in configuration: above this, one line costs more CPU than a
/// connection is worth.
pub const MAX_ITER: u32 = 1_000_000;
/// Longest plaintext accepted: a 253-byte hostname, a colon and a port, brackets and slack.
pub const MAX_PLAINTEXT: usize = 300;
/// Keys kept from costly derivations; the cache starts over when full.
const CACHE_ENTRIES: usize = 4096;

/// Why a line does not give a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not the shape of `openssl enc -a -salt` output (status 400).
    #[error("not a sealed address: {0}")]
    Malformed(&'static str),
    /// The right shape, but it does not decrypt to an address with the secret (status 401).
    #[error("does not decrypt with the gateway's secret")]
    Undecryptable,
}

/// How the key and IV are derived from the secret and the salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// `EVP_BytesToKey`, SHA-256, one round: `openssl enc -md sha256` (default since 1.1.0).
    Sha256,
    /// `EVP_BytesToKey`, MD5, one round: `openssl enc -md md5` (default before 1.1.0).
    Md5,
    /// PBKDF2-HMAC-SHA256: `openssl enc -pbkdf2 [-iter N]`.
    Pbkdf2 {
        /// Rounds.
        iter: u32,
    },
}

impl Kdf {
    /// Parses a configuration name: `sha256`, `md5` or `pbkdf2` (with `iter` rounds).
    pub fn parse(name: &str, iter: u32) -> Result<Kdf, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "sha256" => Ok(Kdf::Sha256),
            "md5" => Ok(Kdf::Md5),
            "pbkdf2" => Ok(Kdf::Pbkdf2 { iter }),
            other => Err(format!("unknown key derivation {other:?}, expected sha256, md5 or pbkdf2")),
        }
    }

    /// Key and IV for `secret` and `salt`.
    pub fn derive(self, secret: &[u8], salt: &[u8; SALT_LEN]) -> [u8; KEY_IV_LEN] {
        match self {
            Kdf::Sha256 => bytes_to_key::<sha2::Sha256>(secret, salt),
            Kdf::Md5 => bytes_to_key::<md5::Md5>(secret, salt),
            Kdf::Pbkdf2 { iter } => {
                let mut out = [0u8; KEY_IV_LEN];
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(secret, salt, iter, &mut out);
                out
            }
        }
    }

    fn is_costly(self) -> bool {
        matches!(self, Kdf::Pbkdf2 { .. })
    }
}

/// OpenSSL's `EVP_BytesToKey` with one round: `D_i = H(D_{i-1} || secret || salt)`,
/// concatenated until there are enough bytes.
fn bytes_to_key<D: Digest>(secret: &[u8], salt: &[u8]) -> [u8; KEY_IV_LEN] {
    let mut out = [0u8; KEY_IV_LEN];
    let mut filled = 0;
    let mut previous = Vec::new();
    while filled < KEY_IV_LEN {
        let mut d = D::new();
        d.update(&previous);
        d.update(secret);
        d.update(salt);
        previous = d.finalize().to_vec();
        let n = previous.len().min(KEY_IV_LEN - filled);
        out[filled..filled + n].copy_from_slice(&previous[..n]);
        filled += n;
    }
    out
}

/// A parsed line: the salt and the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    salt: [u8; SALT_LEN],
    ciphertext: Vec<u8>,
}

impl Sealed {
    /// Parses a line without its line ending: base64 (padding optional) of the header, the
    /// salt and whole AES blocks.
    pub fn parse(line: &[u8]) -> Result<Sealed, SealError> {
        let raw = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
            .decode(line)
            .map_err(|_| SealError::Malformed("not base64"))?;
        let body = raw.strip_prefix(MAGIC.as_slice()).ok_or(SealError::Malformed("no Salted__ header"))?;
        if body.len() < SALT_LEN + BLOCK {
            return Err(SealError::Malformed("too short"));
        }
        let (salt, ciphertext) = body.split_at(SALT_LEN);
        if ciphertext.len() % BLOCK != 0 {
            return Err(SealError::Malformed("ciphertext is not whole AES blocks"));
        }
        if ciphertext.len() > MAX_PLAINTEXT + BLOCK {
            return Err(SealError::Malformed("too long"));
        }
        Ok(Sealed { salt: salt.try_into().expect("split at SALT_LEN"), ciphertext: ciphertext.to_vec() })
    }

    /// Decrypts with `key_iv`; the plaintext must be printable ASCII (an address), surrounding
    /// whitespace removed (a sealed `echo` without `-n` ends in a newline).
    fn open_with(&self, key_iv: &[u8; KEY_IV_LEN]) -> Option<String> {
        let (key, iv) = key_iv.split_at(32);
        let decryptor = cbc::Decryptor::<aes::Aes256>::new(key.into(), iv.into());
        let mut buf = self.ciphertext.clone();
        let plain = decryptor.decrypt_padded_mut::<Pkcs7>(&mut buf).ok()?;
        let text = std::str::from_utf8(plain).ok()?.trim();
        let printable = !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
        printable.then(|| text.to_owned())
    }
}

/// Key and IV already derived, by salt and derivation (its index in the gateway's list).
type KeyCache = HashMap<([u8; SALT_LEN], usize), [u8; KEY_IV_LEN]>;

/// The secret and the derivations a gateway accepts, tried in order.
pub struct Opener {
    secret: Vec<u8>,
    kdfs: Vec<Kdf>,
    cache: Mutex<KeyCache>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener").field("secret", &"***").field("kdfs", &self.kdfs).finish()
    }
}

impl Opener {
    /// An opener for `secret` trying `kdfs` in order.
    pub fn new(secret: Vec<u8>, kdfs: Vec<Kdf>) -> Opener {
        Opener { secret, kdfs, cache: Mutex::new(HashMap::new()) }
    }

    /// Whether opening may cost a PBKDF2 derivation (run it off the async workers).
    pub fn is_costly(&self) -> bool {
        self.kdfs.iter().any(|k| k.is_costly())
    }

    /// The plaintext of a sealed line: the first derivation that decrypts it to an address.
    pub fn open(&self, sealed: &Sealed) -> Result<String, SealError> {
        for (i, kdf) in self.kdfs.iter().enumerate() {
            let key_iv = self.key_iv(i, *kdf, &sealed.salt);
            if let Some(text) = sealed.open_with(&key_iv) {
                return Ok(text);
            }
        }
        Err(SealError::Undecryptable)
    }

    fn key_iv(&self, index: usize, kdf: Kdf, salt: &[u8; SALT_LEN]) -> [u8; KEY_IV_LEN] {
        if !kdf.is_costly() {
            return kdf.derive(&self.secret, salt);
        }
        if let Some(hit) = self.cache.lock().expect("key cache lock").get(&(*salt, index)) {
            return *hit;
        }
        // Derived without the lock held: other lines go on meanwhile.
        let key_iv = kdf.derive(&self.secret, salt);
        let mut cache = self.cache.lock().expect("key cache lock");
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert((*salt, index), key_iv);
        key_iv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// `openssl enc -aes-256-cbc -k 'p0S8rX680*48' -S 0001020304050607 -P` with `-md md5`,
    /// `-md sha256`, `-pbkdf2` and `-pbkdf2 -iter 1000` (OpenSSL 3.0): key then IV.
    #[test]
    fn derivations_match_openssl() {
        let salt = [0, 1, 2, 3, 4, 5, 6, 7];
        let secret = b"p0S8rX680*48";
        for (kdf, key, iv) in [
            (
                Kdf::Md5,
                "2C842653064C3979D881694F59E5ACD93B4E42CDFD33D8B3BDDF9FFC498E6415",
                "0721952963F4FA32EDA81A7C397A98A9",
            ),
            (
                Kdf::Sha256,
                "F685A5F78401329442080AB9D310DC77808C465B0FB5A43EC5549283EE85EE90",
                "7C166017105A0D42610E5A128D89DF12",
            ),
            (
                Kdf::Pbkdf2 { iter: DEFAULT_ITER },
                "9D8A62E080131B35E03FE25829318EC42925D01505B4D5796FE6A347EEC024EF",
                "D2399A160A3D3259B52A33D271FA70F0",
            ),
            (
                Kdf::Pbkdf2 { iter: 1000 },
                "1C924660876BB576F8673C7850746D2941B59CAC3F4B1D43D0D78A156B226F18",
                "2523504B0DA7AA44775C7A72CDECEE4D",
            ),
        ] {
            let out = kdf.derive(secret, &salt);
            assert_eq!(out[..32], hex(key)[..], "{kdf:?} key");
            assert_eq!(out[32..], hex(iv)[..], "{kdf:?} iv");
        }
    }

    /// The seed's own example line, sealed by an OpenSSL of the MD5 era.
    #[test]
    fn the_seed_example_opens_with_md5_only() {
        let line = b"U2FsdGVkX19KIJ9OQJKT/yHGMrS+5SsBAAjetomptQ0=";
        let sealed = Sealed::parse(line).unwrap();
        let md5 = Opener::new(b"p0S8rX680*48".to_vec(), vec![Kdf::Md5]);
        assert_eq!(md5.open(&sealed).unwrap(), "127.0.0.1:62863");
        let both = Opener::new(b"p0S8rX680*48".to_vec(), vec![Kdf::Sha256, Kdf::Md5]);
        assert_eq!(both.open(&sealed).unwrap(), "127.0.0.1:62863");
        let sha = Opener::new(b"p0S8rX680*48".to_vec(), vec![Kdf::Sha256]);
        assert_eq!(sha.open(&sealed), Err(SealError::Undecryptable));
        let wrong = Opener::new(b"p0S8rX680*49".to_vec(), vec![Kdf::Md5]);
        assert_eq!(wrong.open(&sealed), Err(SealError::Undecryptable));
    }

    /// `echo -n 'app.example.com' | openssl enc -e -aes-256-cbc -a -salt -k s3cret -pbkdf2
    /// -S 0001020304050607` (OpenSSL 3.0, which leaves out the header when given the salt:
    /// `Salted__` and the salt are put back in front), opened again by `openssl enc -d`.
    #[test]
    fn a_pbkdf2_line_opens_and_its_key_is_kept() {
        let sealed = Sealed::parse(b"U2FsdGVkX18AAQIDBAUGB1WeX4seATt84n4csbXVJvY=").unwrap();
        let opener = Opener::new(b"s3cret".to_vec(), vec![Kdf::Sha256, Kdf::Pbkdf2 { iter: DEFAULT_ITER }]);
        assert!(opener.is_costly());
        assert_eq!(opener.open(&sealed).unwrap(), "app.example.com");
        assert_eq!(opener.cache.lock().unwrap().len(), 1);
        assert_eq!(opener.open(&sealed).unwrap(), "app.example.com");
    }

    #[test]
    fn malformed_lines_are_told_apart_from_undecryptable_ones() {
        let bad = |line: &[u8]| Sealed::parse(line).unwrap_err();
        assert_eq!(bad(b"hello world"), SealError::Malformed("not base64"));
        assert_eq!(bad(b"aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8="), SealError::Malformed("no Salted__ header"));
        assert_eq!(bad(b"U2FsdGVkX18AAQIDBAUGBw=="), SealError::Malformed("too short"));
        assert_eq!(
            bad(b"U2FsdGVkX18AAQIDBAUGBwABAgMEBQYHCAkKCwwNDg8Q"),
            SealError::Malformed("ciphertext is not whole AES blocks")
        );
        assert_eq!(bad(b""), SealError::Malformed("no Salted__ header"));
        // Unpadded base64 is accepted.
        assert!(Sealed::parse(b"U2FsdGVkX19KIJ9OQJKT/yHGMrS+5SsBAAjetomptQ0").is_ok());
    }

    #[test]
    fn garbage_never_panics() {
        let opener = Opener::new(b"k".to_vec(), vec![Kdf::Sha256, Kdf::Md5]);
        let mut state = 0x1234_5678_u64;
        for len in 0..600 {
            let line: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Mostly base64 characters, so some lines get past the decoder.
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="[(state % 65) as usize]
                })
                .collect();
            let mut with_magic = b"U2FsdGVkX1".to_vec();
            with_magic.extend_from_slice(&line);
            for l in [line, with_magic] {
                if let Ok(sealed) = Sealed::parse(&l) {
                    let _ = opener.open(&sealed);
                }
            }
        }
    }
}
