//! `tunnel-agent`: parses the command line, loads the config, serves until SIGINT/SIGTERM.

use anyhow::{bail, Context};
use clap::Parser;
use tunnel_agent::{Agent, FileConfig};
use tunnel_proto::telemetry::{self, LogFormat};

/// The private side of tunnel: joins a tunnel on the server and carries its streams to local
/// targets.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  \
    tunnel-agent -L rtcp://:0/192.168.1.1:80 -F \"relay://server:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b\"\n  \
    tunnel-agent -L rtcp://:0/:22 -F \"relay://server:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a&token=SECRET\"\n  \
    tunnel-agent -C agent.toml"
)]
struct Cli {
    /// Service: rtcp://:0/HOST:PORT[,HOST:PORT...] (a target for every hostname).
    #[arg(short = 'L', value_name = "URL")]
    services: Vec<String>,
    /// The server: relay://HOST:PORT?tunnel.id=UUID[&token=T][&weight=N]
    #[arg(short = 'F', value_name = "URL", requires = "services")]
    relay: Option<String>,
    /// TOML configuration file (instead of -L/-F).
    #[arg(short = 'C', long = "config", value_name = "FILE", conflicts_with_all = ["services", "relay"])]
    config: Option<String>,
    /// Token for the tunnel (overrides the URL's or file's token).
    #[arg(long, env = "TUNNEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Worker threads: 1 = a single-threaded runtime (the cheapest per request; it still
    /// moves well over 10 Gbit/s), 0 = one per core.
    #[arg(long, env = "TUNNEL_THREADS", default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tunnel_proto::tls::install_provider();
    telemetry::init_logging(cli.log_format, &cli.log_level);
    let (mut file, source) = match (&cli.relay, &cli.config) {
        (Some(relay), None) => (FileConfig::from_urls(&cli.services, relay)?, "command line".to_owned()),
        (None, Some(path)) => (FileConfig::load(path)?, path.clone()),
        _ => bail!("give services and a server with -L rtcp://:0/HOST:PORT -F relay://SERVER?tunnel.id=UUID, or a file with -C FILE (see --help)"),
    };
    if cli.token.is_some() {
        file.relay.token = cli.token.clone();
    }
    let config = file.validate(&source)?;
    if cli.check {
        println!("{source}: configuration is valid");
        return Ok(());
    }
    let runtime = telemetry::runtime(cli.threads).context("cannot start the async runtime")?;
    runtime.block_on(async {
        let agent = Agent::spawn(config)?;
        telemetry::shutdown_signal().await;
        tracing::info!("shutting down: finishing connections in flight (a second signal stops at once)");
        tokio::select! {
            _ = agent.shutdown() => {}
            _ = telemetry::shutdown_signal() => tracing::warn!("second signal: stopping now"),
        }
        Ok(())
    })
}
