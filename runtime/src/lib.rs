//! What tunnel's three binaries share besides the protocol (which is `tunnel-proto`).
//!
//! - [`config`], [`url`], [`secret`]: configuration loading, the gost-style command-line URLs,
//!   and secrets that never print.
//! - [`cli`], [`telemetry`], [`lifecycle`]: the common flags, logging, the async runtime, and
//!   the one shutdown shape (root token, children, tracked tasks, drain with a grace period).
//! - [`client`]: the client side of a session for the agent and the access client: dial, hello,
//!   keepalive, backoff, and the keeper that holds a session slot open.
//! - [`visitor`], [`http`]: the visitor path of the server's entrypoints and the access
//!   client's listeners (hostname, refusal with an HTTP answer the visitor can read).
//! - [`udp`]: UDP flows over streams, for the agent and the access client.
//! - [`gost`]: GOST v3 YAML files (`-C gost.yaml`), read into each binary's TOML-side file.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod connect;
pub mod gost;
pub mod http;
pub mod lifecycle;
pub mod proxy_protocol;
pub mod secret;
pub mod telemetry;
pub mod threads;
pub mod udp;
pub mod url;
pub mod visitor;

pub use lifecycle::Lifecycle;
pub use secret::Secret;
