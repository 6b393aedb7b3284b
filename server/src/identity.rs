//! The server's certificate for `relay+tls://` and `relay+quic://`: the configured PEM files,
//! or a self-signed certificate made once and kept in the state directory, so its fingerprint
//! (which clients pin) survives restarts.

use std::path::Path;

use anyhow::Context;
use tunnel_proto::tls::{ServerIdentity, TlsError};

use crate::config::IdentitySource;

/// Loads (or, the first time, makes) the identity the configuration names.
pub fn load(source: &IdentitySource) -> anyhow::Result<ServerIdentity> {
    match source {
        IdentitySource::Files { cert, key } => Ok(ServerIdentity::load(cert, key)?),
        IdentitySource::SelfSigned { dir, names } => {
            let id = load_or_generate(dir, names)
                .with_context(|| format!("cannot keep a self-signed certificate in {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), pin = %id.fingerprint(), "using a self-signed certificate; clients pin it with its pin");
            Ok(id)
        }
    }
}

/// Loads the self-signed identity kept in `dir`, or makes one (valid for `names` besides
/// localhost and the loopback addresses) and keeps it there; the key is written 0600.
pub fn load_or_generate(dir: &Path, names: &[String]) -> anyhow::Result<ServerIdentity> {
    let cert_file = dir.join("server-cert.pem");
    let key_file = dir.join("server-key.pem");
    if cert_file.exists() && key_file.exists() {
        return Ok(ServerIdentity::load(&cert_file, &key_file)?);
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut all = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    all.extend(names.iter().cloned());
    let certified = rcgen::generate_simple_self_signed(all).context("cannot generate a certificate")?;
    write_private(&key_file, certified.signing_key.serialize_pem().as_bytes()).map_err(io(&key_file))?;
    std::fs::write(&cert_file, certified.cert.pem()).map_err(io(&cert_file))?;
    Ok(ServerIdentity::load(&cert_file, &key_file)?)
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_identity_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_generate(dir.path(), &["relay.example".into()]).unwrap();
        let b = load_or_generate(dir.path(), &[]).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("sha256:") && a.fingerprint().len() == 7 + 64);
        a.server_config().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("server-key.pem")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
