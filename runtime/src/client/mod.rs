//! The client side of a session, shared by the agent and the access client: where to connect
//! ([`relay`]), an upstream proxy on the way ([`proxy`]), dialing and the hello ([`dial`]),
//! the control stream ([`control`]), reconnect delays ([`backoff`]), which server address a
//! session slot tries next ([`rotation`]), refusals that only a configuration change ends
//! ([`refusal`]) and the loop that keeps a session alive ([`keeper`]).

pub mod backoff;
pub mod control;
pub mod dial;
pub mod keeper;
pub mod proxy;
pub mod refusal;
pub mod relay;
pub mod rotation;

pub use backoff::Backoff;
pub use control::{run_control, ControlEnd};
pub use dial::{Candidate, ConnectError, Connected, Dialer};
pub use keeper::{keep, Established, KeeperTimings, SessionUser};
pub use proxy::{Proxy, ProxyKind};
pub use relay::{parse_tunnel_id, RelayFile, RelayOptions, TunnelIdTable};
