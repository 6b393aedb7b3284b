//! What the three binaries' command lines share: `--check`, logging and threads flags
//! (flattened into each `Cli`), and the run-until-signal loop of `main`.

use std::future::Future;

use anyhow::Context;

use crate::client::RelayFile;
use crate::config::ConfigError;
use crate::telemetry::{self, LogFormat};
use crate::Secret;

/// What `--version` prints after the binary's name: the version, the commit it was built from
/// and the build date (see `build.rs`; "unknown" when built outside a git checkout).
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TUNNEL_COMMIT"), ", built ", env!("TUNNEL_BUILD_DATE"), ")");

/// Flags every binary takes.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check: bool,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level or filter (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Admin listener (health, readiness, metrics, API): ADDR such as 127.0.0.1:9100; overrides
    /// the file's [admin] addr.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Threads, each running its own event loop, with connections spread over them (0 = one
    /// per core). Default: 0 for the server, 1 for the agent and the access client.
    #[arg(long, env = "TUNNEL_THREADS")]
    pub threads: Option<usize>,
}

impl CommonArgs {
    /// Installs the TLS crypto provider and the log subscriber: the first thing `main` does.
    pub fn init(&self) {
        tunnel_proto::tls::install_provider();
        telemetry::init_logging(self.log_format, &self.log_level);
    }

    /// With `--check`, says the configuration from `source` is valid and returns; otherwise
    /// runs the component until a signal (see [`run_until_signal`]) with `--threads` or
    /// `default_threads` workers.
    pub fn check_or_run<C, F, Fut>(
        &self,
        source: &str,
        default_threads: usize,
        start: F,
        on_signal: &str,
    ) -> anyhow::Result<()>
    where
        C: Stop,
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<C>>,
    {
        if self.check {
            println!("{source}: configuration is valid");
            return Ok(());
        }
        run_until_signal(self.threads.unwrap_or(default_threads), start, on_signal)
    }
}

/// The command line of a client binary (agent, access client). Each binary words the help of
/// `-L` and `-F` for itself (`mut_arg`).
#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// Service or listener URL.
    #[arg(short = 'L', value_name = "URL")]
    pub services: Vec<String>,
    /// The server: relay://HOST:PORT?tunnel.id=UUID[&token=T | &tokenFile=FILE]; a proxy on
    /// the way is a -F before it: -F http://[USER:PASS@]HOST:PORT or -F socks5://...
    #[arg(short = 'F', value_name = "URL", requires = "services")]
    pub relay: Vec<String>,
    /// Configuration file (instead of -L/-F): TOML, or GOST YAML when it ends in .yaml or .yml.
    #[arg(short = 'C', long = "config", value_name = "FILE", conflicts_with_all = ["services", "relay"])]
    pub config: Option<String>,
    /// Token for the tunnel (overrides the URL's or file's token or tokenFile), or a
    /// connection token (tun1_...), which names the server too: then -L is all else needed.
    #[arg(long, env = "TUNNEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token or the connection token instead (private to its owner).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<String>,
    /// Agents: a hostname to be routed to the tunnel while this agent is connected (`myapp`,
    /// under the suffix the tunnel allows), first come first served.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// Shows no secret: the token is `***`, and so are the URLs' tokens and proxy passwords.
impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |urls: &[String]| urls.iter().map(|u| crate::url::redact(u)).collect::<Vec<_>>();
        f.debug_struct("ClientArgs")
            .field("services", &redacted(&self.services))
            .field("relay", &redacted(&self.relay))
            .field("config", &self.config)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("common", &self.common)
            .finish()
    }
}

impl ClientArgs {
    /// Installs the TLS provider and logging, loads the configuration (see [`load_client`]),
    /// and runs the component `start` makes from it until a signal, or only checks it.
    pub fn main<T, C, F, Fut>(self, usage: &str, start: F) -> anyhow::Result<()>
    where
        T: ClientFile,
        C: Stop,
        F: FnOnce(T::Config) -> Fut,
        Fut: Future<Output = anyhow::Result<C>>,
    {
        self.common.init();
        let token = match (&self.token, &self.token_file) {
            (_, Some(file)) => Some(
                crate::secret::Secret::from_file(file)
                    .map_err(|why| anyhow::anyhow!("--token-file: {why}"))?
                    .expose()
                    .trim()
                    .to_owned(),
            ),
            (token, None) => token.clone(),
        };
        let (config, source) = load_client::<T>(
            &self.services,
            &self.relay,
            self.config.as_deref(),
            (token, self.hostname),
            self.common.admin.clone(),
            usage,
        )?;
        let on_signal = "shutting down: finishing connections in flight (a second signal stops at once)";
        self.common.check_or_run(&source, 1, || start(config), on_signal)
    }
}

/// The configuration file of a client binary (agent, access client): `-L` URLs with a `-F`
/// server URL, or a TOML file with `-C`.
pub trait ClientFile: Sized + Clone + serde::de::DeserializeOwned {
    /// The validated configuration.
    type Config;
    /// From `-L` URLs and the `-F` URL.
    fn from_urls(services: &[String], relay: &str) -> Result<Self, ConfigError>;
    /// From a GOST YAML document, with the YAML path of each TOML key it filled.
    fn from_gost(doc: &crate::gost::Document) -> Result<(Self, crate::gost::KeyMap), crate::gost::Bad>;
    /// From a TOML file, or a GOST YAML one (`.yaml`, `.yml`): translated, then validated once
    /// so that an error names the YAML key it came from.
    fn load(path: &str) -> Result<Self, ConfigError> {
        if !crate::gost::is_yaml(path) {
            return crate::config::load_toml(path);
        }
        let (file, keys) = Self::from_gost(&crate::gost::load(path)?).map_err(|bad| crate::gost::invalid(path, bad))?;
        file.clone().validate(path).map_err(|e| keys.rename(e))?;
        Ok(file)
    }
    /// The `[relay]` table, where `--token` goes.
    fn relay_mut(&mut self) -> &mut RelayFile;
    /// The `[admin]` table, where `--admin` goes.
    fn admin_mut(&mut self) -> &mut crate::admin::AdminFile;
    /// Checks every value; errors name `source` and the key.
    fn validate(self, source: &str) -> Result<Self::Config, ConfigError>;
}

/// Loads a client's configuration from `-L`/`-F` or `-C` (`usage` says how when neither is
/// given), with `--token` over the file's, and validates it. Returns it with its source name.
/// The `-F` hops are a chain as in GOST: an optional proxy (`http://` or `socks5://`), then
/// the relay.
pub fn load_client<T: ClientFile>(
    services: &[String],
    hops: &[String],
    file: Option<&str>,
    (token, hostname): (Option<String>, Option<String>),
    admin: Option<String>,
    usage: &str,
) -> anyhow::Result<(T::Config, String)> {
    // A connection token (`tun1_...`) names the server, the tunnel, its secret and the pin:
    // with it, -L services are all that is needed.
    let connect = match token.as_deref().filter(|t| crate::connect::ConnectToken::is_one(t)) {
        Some(raw) => Some(crate::connect::ConnectToken::decode(raw).map_err(|e| anyhow::anyhow!("--token: {e}"))?),
        None => None,
    };
    let token = match &connect {
        Some(connect) => Some(connect.secret.clone()),
        None => token,
    };
    let (mut config, source) = match (hops, file, &connect) {
        ([], None, Some(connect)) => (T::from_urls(services, &connect.relay_url())?, "connection token".to_owned()),
        ([], Some(path), _) => (T::load(path)?, path.to_owned()),
        ([_, ..], None, _) => {
            let (relay, proxy) = split_chain(hops)?;
            let mut config = T::from_urls(services, relay)?;
            config.relay_mut().proxy = proxy.map(|p| Secret::from(p.to_owned()));
            (config, "command line".to_owned())
        }
        _ => anyhow::bail!("{usage}"),
    };
    if let Some(token) = token {
        config.relay_mut().set_token(Secret::from(token));
    }
    if let Some(admin) = admin {
        config.admin_mut().addr = Some(admin);
    }
    if let Some(hostname) = hostname {
        config.relay_mut().hostname = Some(hostname);
    }
    Ok((config.validate(&source)?, source))
}

/// Splits the `-F` chain into the relay URL (the last hop) and the proxy before it, if any.
fn split_chain(hops: &[String]) -> anyhow::Result<(&str, Option<&str>)> {
    let is_proxy = |h: &str| {
        let scheme = h.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        matches!(scheme.as_str(), "http" | "https" | "socks5" | "socks5h" | "socks4" | "socks")
    };
    let (relay, before) = hops.split_last().expect("at least one -F");
    if is_proxy(relay) {
        anyhow::bail!(
            "-F: the last hop must be the server (relay://...), the proxies come before it: \
             -F http://proxy:3128 -F relay://server:8443?tunnel.id=..."
        );
    }
    match before {
        [] => Ok((relay, None)),
        [proxy] if is_proxy(proxy) => Ok((relay, Some(proxy))),
        [_] => anyhow::bail!(
            "-F: a hop before the server must be a proxy, http://[user:pass@]host:port or socks5://[user:pass@]host:port"
        ),
        _ => anyhow::bail!("-F: {} hops given; one proxy and then the server is the longest chain supported", hops.len()),
    }
}

/// A running component that a binary stops on a signal.
pub trait Stop {
    /// Stops gracefully.
    fn stop(self) -> impl Future<Output = ()>;
}

/// The most threads `--threads` may ask for.
pub const MAX_THREADS: usize = 1024;

/// Starts `threads` single-threaded runtimes (0: one per core; see [`crate::threads`]), runs
/// `start` on the first, and serves until SIGINT or SIGTERM; then logs `on_signal` and stops
/// the component (a second signal stops at once).
pub fn run_until_signal<C, F, Fut>(threads: usize, start: F, on_signal: &str) -> anyhow::Result<()>
where
    C: Stop,
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<C>>,
{
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n if n > MAX_THREADS => anyhow::bail!("--threads {n}: at most {MAX_THREADS}"),
        n => n,
    };
    let runtime = telemetry::runtime().context("cannot start the async runtime")?;
    crate::threads::start(runtime.handle().clone(), threads).context("cannot start the async runtime's threads")?;
    runtime.block_on(async {
        tracing::info!(threads, "async runtime started");
        let component = start().await?;
        telemetry::shutdown_signal().await;
        tracing::info!(message = %on_signal);
        tokio::select! {
            _ = component.stop() => {}
            _ = telemetry::shutdown_signal() => tracing::warn!("second signal: stopping now"),
        }
        Ok(())
    })
}
