//! `tunnel-server`: parses the command line, loads the config, serves until SIGINT/SIGTERM.

use anyhow::{bail, Context};
use clap::Parser;
use tunnel_proto::telemetry::{self, LogFormat};
use tunnel_server::{FileConfig, Server};

/// The public side of tunnel: agents and access clients connect to its relay listener,
/// visitors to its entrypoints.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  \
    tunnel-server -L \"relay://:8443?entryPoint=:80&tunnel=.example.com:4d21094e-b74c-4916-86c1-d9fa36ea677b,example.org:ac74d9dd-3125-442a-a7c1-f9e49e05faca\"\n  \
    tunnel-server -L \"relay://:8443?tunnel.direct=true\"\n  \
    tunnel-server -C server.toml\n\n\
    Rules: HOST:UUID routes HOST to a tunnel; HOST:$UUID makes the rule private (access clients only).\n\
    HOST may be example.org (exact), .example.com (it and its subdomains) or *.example.com (subdomains)."
)]
struct Cli {
    /// Relay service URL: relay://ADDR?entryPoint=...&tunnel=HOST:UUID,...&tunnel.direct=true
    #[arg(short = 'L', value_name = "URL", conflicts_with = "config")]
    listen: Option<String>,
    /// TOML configuration file (instead of -L).
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    config: Option<String>,
    /// Token accepted for every tunnel (overrides the file's `token`).
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
    /// Worker threads: 0 = one per core, 1 = a single-threaded runtime.
    #[arg(long, env = "TUNNEL_THREADS", default_value_t = 0)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tunnel_proto::tls::install_provider();
    telemetry::init_logging(cli.log_format, &cli.log_level);
    let (mut file, source) = match (&cli.listen, &cli.config) {
        (Some(url), None) => (FileConfig::from_url(url)?, "-L".to_owned()),
        (None, Some(path)) => (FileConfig::load(path)?, path.clone()),
        _ => bail!("give a relay service with -L relay://ADDR?... or a config file with -C FILE (see --help)"),
    };
    if cli.token.is_some() {
        file.token = cli.token.clone();
    }
    let config = file.validate(&source)?;
    if cli.check {
        println!("{source}: configuration is valid");
        return Ok(());
    }
    let runtime = telemetry::runtime(cli.threads).context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::spawn(config).await?;
        telemetry::shutdown_signal().await;
        let grace = server.grace_period();
        // `Server::shutdown` logs "shutting down" once its listeners are closed.
        tracing::info!("signal received: closing listeners (a second signal stops at once)");
        tokio::select! {
            _ = server.shutdown(grace) => {}
            _ = telemetry::shutdown_signal() => tracing::warn!("second signal: stopping now"),
        }
        Ok(())
    })
}
