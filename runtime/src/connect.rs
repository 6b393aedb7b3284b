//! Connection tokens: one opaque string that carries everything an agent or access client
//! needs to join a tunnel (the server's relay URL, the tunnel's ID, its secret and the
//! server certificate's pin), printed once when the tunnel is made.
//!
//! `tun1_` then base64url (no padding) of a small JSON document. It is a secret: whoever
//! holds it joins the tunnel.

use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What every connection token starts with.
pub const PREFIX: &str = "tun1_";

/// The contents of a connection token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectToken {
    /// The server's relay URLs (`relay+tls://tunnel.example.com:8443`), the first tried first.
    #[serde(rename = "s")]
    pub servers: Vec<String>,
    /// The tunnel.
    #[serde(rename = "t")]
    pub tunnel: Uuid,
    /// The tunnel's secret.
    #[serde(rename = "k")]
    pub secret: String,
    /// `sha256:...` of the server's certificate, for the encrypted transports.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

impl std::fmt::Debug for ConnectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectToken").field("servers", &self.servers).field("tunnel", &self.tunnel).finish()
    }
}

impl ConnectToken {
    /// Whether `raw` is a connection token (rather than a bare secret).
    pub fn is_one(raw: &str) -> bool {
        raw.trim().starts_with(PREFIX)
    }

    /// The token as printed.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token is JSON");
        format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads a printed token; the error says what is wrong without repeating it.
    pub fn decode(raw: &str) -> Result<ConnectToken, String> {
        let body = raw.trim().strip_prefix(PREFIX).ok_or("not a connection token (they start with tun1_)")?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| "the connection token is damaged (not base64url): copy it whole")?;
        let token: ConnectToken =
            serde_json::from_slice(&json).map_err(|_| "the connection token is damaged: copy it whole")?;
        if token.servers.is_empty() || token.secret.is_empty() {
            return Err("the connection token names no server or no secret".into());
        }
        Ok(token)
    }

    /// The `-F` URL of the first server: its relay URL with the tunnel, the secret and the pin.
    pub fn relay_url(&self) -> String {
        let mut url = format!("{}?tunnel.id={}&token={}", self.servers[0], self.tunnel, self.secret);
        if let Some(pin) = &self.pin {
            url.push_str(&format!("&pin={pin}"));
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_damage_is_named() {
        let token = ConnectToken {
            servers: vec!["relay+tls://t.example:8443".into()],
            tunnel: Uuid::new_v4(),
            secret: "c2VjcmV0".into(),
            pin: Some("sha256:00".into()),
        };
        let printed = token.encode();
        assert!(ConnectToken::is_one(&printed));
        assert_eq!(ConnectToken::decode(&format!(" {printed}\n")).unwrap(), token);
        assert!(ConnectToken::decode(&printed[..printed.len() - 4]).unwrap_err().contains("damaged"));
        assert!(ConnectToken::decode("secret").unwrap_err().contains("tun1_"));
        assert!(!format!("{token:?}").contains("c2VjcmV0"), "Debug shows no secret");
        assert!(token.relay_url().starts_with("relay+tls://t.example:8443?tunnel.id="));
    }
}
