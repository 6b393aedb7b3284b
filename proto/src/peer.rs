//! The proofs of the peer handshake between server replicas: HMAC-SHA256 under the cluster
//! secret over both fresh nonces and both names, with a context string per direction, so a
//! proof is good for one handshake, one direction and one pair of replicas only.
//! `docs/PROTOCOL.md` gives the exchange and a vector that `tests/vectors.rs` checks.

use hmac::{Hmac, Mac};

use crate::wire::PEER_NONCE;

type HmacSha256 = Hmac<sha2::Sha256>;

/// Who makes a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prover {
    /// The replica dialed: its proof covers the dialer's nonce first.
    Listener,
    /// The replica dialing: its proof covers the listener's nonce first.
    Dialer,
}

impl Prover {
    fn context(self) -> &'static [u8] {
        match self {
            Prover::Listener => b"tunnel peer v2 listener",
            Prover::Dialer => b"tunnel peer v2 dialer",
        }
    }
}

/// The proof `prover` sends: HMAC-SHA256(secret, context | challenge | own nonce | dialer
/// name | listener name), each name after its length byte. `challenge` is the nonce the
/// other replica sent, `own` the prover's.
pub fn proof(
    secret: &[u8],
    prover: Prover,
    challenge: &[u8; PEER_NONCE],
    own: &[u8; PEER_NONCE],
    dialer: &str,
    listener: &str,
) -> [u8; PEER_NONCE] {
    mac(secret, prover, challenge, own, dialer, listener).finalize().into_bytes().into()
}

/// Whether `given` is `prover`'s proof, compared in constant time.
pub fn verify(
    secret: &[u8],
    prover: Prover,
    challenge: &[u8; PEER_NONCE],
    own: &[u8; PEER_NONCE],
    dialer: &str,
    listener: &str,
    given: &[u8; PEER_NONCE],
) -> bool {
    mac(secret, prover, challenge, own, dialer, listener).verify_slice(given).is_ok()
}

/// The MAC over everything a proof covers, before it is finished.
fn mac(
    secret: &[u8],
    prover: Prover,
    challenge: &[u8; PEER_NONCE],
    own: &[u8; PEER_NONCE],
    dialer: &str,
    listener: &str,
) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(prover.context());
    mac.update(challenge);
    mac.update(own);
    for name in [dialer, listener] {
        mac.update(&[name.len() as u8]);
        mac.update(name.as_bytes());
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_the_secret_the_nonces_the_names_and_the_direction() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let key = b"0123456789abcdef";
        let p = proof(key, Prover::Listener, &a, &b, "x", "y");
        assert!(verify(key, Prover::Listener, &a, &b, "x", "y", &p));
        assert!(!verify(b"0123456789abcdeF", Prover::Listener, &a, &b, "x", "y", &p), "another secret");
        assert!(!verify(key, Prover::Dialer, &a, &b, "x", "y", &p), "the other direction");
        assert!(!verify(key, Prover::Listener, &b, &a, "x", "y", &p), "nonces swapped");
        assert!(!verify(key, Prover::Listener, &a, &b, "xy", "", &p), "names are length-prefixed");
    }
}
