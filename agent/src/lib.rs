//! `tunnel-agent`: the private side of tunnel.
//!
//! The agent dials the server, joins one tunnel, and serves the streams the server opens.
//! Its sessions are kept by the shared keeper ([`tunnel_runtime::client::keeper`]): several
//! per agent (`sessions`, default 2; N for one on each of N replicas), spread over the
//! configured servers' addresses, failing over to the next address when one is lost, and
//! reconnecting with backoff forever.
//! Life of a stream ([`stream`]): the server opens it and writes a stream header naming the
//! network and the visitor's hostname; the agent asks [`target`] for the group of targets whose
//! `host` pattern matches (targets without `host` are the fallbacks), dials them in the
//! selector's order under the dial timeout until one answers (skipping those that failed
//! lately), writes a PROXY protocol header if the target wants one ([`proxy_protocol`]),
//! answers with a status, and then copies bytes both ways ([`udp`] for UDP flows). A
//! stream names a hostname, never an address: the agent only ever connects to targets in its
//! own configuration.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

use tokio::sync::Semaphore;
use tunnel_proto::wire::{Networks, Role};
use tunnel_runtime::client::{keep, Established, SessionUser};
use tunnel_runtime::Lifecycle;

pub mod admin;
pub mod config;
pub mod health;
pub mod proxy_protocol;
mod stream;
pub mod target;
mod udp;

pub use config::{Config, FileConfig};
pub use target::Target;

/// A running agent.
pub struct Agent {
    life: Lifecycle,
    admin: Option<tunnel_runtime::admin::Admin>,
}

struct Shared {
    config: Config,
    targets: target::Targets,
    udp_flows: Semaphore,
    metrics: admin::Metrics,
    sessions: admin::Sessions,
}

/// Serves the streams the server opens on an established session.
struct Serve(Arc<Shared>);

impl SessionUser for Serve {
    fn up(&self, here: &Established) {
        self.0.metrics.sessions.inc();
        self.0.sessions.up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let info =
            admin::SessionInfo { server: here.session.peer_addr().to_string(), since: std::time::SystemTime::now() };
        self.0.sessions.list.lock().expect("sessions lock").push((here.id, info));
        let (shared, here) = (self.0.clone(), here.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    s = here.session.accept_stream() => s,
                    _ = here.done.cancelled() => break,
                };
                let Ok(Some(stream)) = accepted else { break };
                here.streams.spawn(stream::serve(shared.clone(), stream));
            }
        });
    }

    fn down(&self, here: &Established) {
        self.0.metrics.sessions.dec();
        self.0.sessions.up.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.sessions.list.lock().expect("sessions lock").retain(|(id, _)| *id != here.id);
    }

    fn reconnect(&self, reason: &'static str) {
        self.0.metrics.reconnects.get_or_create(&admin::Reason { reason }).inc();
    }
}

impl Agent {
    /// Starts the agent's session keepers. Fails only on unusable TLS settings (e.g. an
    /// unreadable `caFile`); an unreachable server is retried forever.
    pub async fn spawn(config: Config) -> anyhow::Result<Agent> {
        let mut networks = Networks::NONE;
        for t in &config.targets {
            networks = networks.with(t.network);
            if let Some(tls) = t.tls.as_ref().filter(|tls| tls.verify == tunnel_proto::tls::Verify::Insecure) {
                tracing::warn!(target = %t.name, server_name = ?tls.server_name, "insecure = true: the target's certificate is not checked; anyone on the path to it can read and change the traffic");
            }
        }
        let hello = config.relay.hello(Role::Agent, networks);
        let dialer = Arc::new(config.relay.dialer(hello, config.limits.handshake_timeout)?);
        let timings = config.limits.session;
        let shared = Arc::new(Shared {
            udp_flows: Semaphore::new(config.limits.max_udp_flows),
            targets: target::Targets::new(config.targets.clone()),
            metrics: admin::Metrics::default(),
            sessions: admin::Sessions::default(),
            config,
        });
        let admin = tunnel_runtime::admin::Admin::start(shared.config.admin.as_ref(), |mut registry| {
            shared.metrics.register(&mut registry);
            Arc::new(admin::AgentAdmin { shared: shared.clone(), registry })
        })
        .await?;
        let life = Lifecycle::new();
        health::spawn(&shared, life.tasks(), life.stopping());
        let user: Arc<dyn SessionUser> = Arc::new(Serve(shared.clone()));
        // Sessions spread over the threads, each with the streams it carries.
        let spread = tunnel_runtime::threads::Spread::new();
        for index in 0..shared.config.relay.sessions.max(1) {
            let stop = life.stopping().clone();
            spread.spawn(life.tasks(), keep(dialer.clone(), index, timings, user.clone(), stop));
        }
        life.tasks().spawn(tunnel_runtime::telemetry::on_sighup(life.stopping().clone(), || {
            tracing::info!("SIGHUP: the agent reloads nothing; restart it to apply a changed configuration");
        }));
        Ok(Agent { life, admin })
    }

    /// Stops the agent: every session says going-away, finishes its streams (each within the
    /// grace period), and closes.
    pub async fn shutdown(self) {
        self.life.begin_stop();
        self.life.tasks().close();
        self.life.tasks().wait().await;
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
    }

    /// The admin listener's bound address, if it is on.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr())
    }
}

impl tunnel_runtime::cli::Stop for Agent {
    async fn stop(self) {
        self.shutdown().await
    }
}
