//! `tunnel-server`: parses the command line, loads the config, serves until SIGINT/SIGTERM.

use anyhow::bail;
use clap::Parser;
use tunnel_runtime::cli::CommonArgs;
use tunnel_server::config::Origin;
use tunnel_server::{FileConfig, Server};

/// The public side of tunnel: agents and access clients connect to its relay listener,
/// visitors to its entrypoints.
#[derive(Parser)]
#[command(
    version = tunnel_runtime::cli::VERSION,
    after_help = "Examples:\n  \
    tunnel-server -L \"relay://:8443?entryPoint=:80&tunnel=.example.com:4d21094e-b74c-4916-86c1-d9fa36ea677b,example.org:ac74d9dd-3125-442a-a7c1-f9e49e05faca\"\n  \
    tunnel-server -L \"relay://:8443?tunnel.direct=true\"\n  \
    tunnel-server -C server.toml\n  \
    tunnel-server -C gost.yaml   (a GOST v3 YAML file: services, ingresses)\n  \
    tunnel-server -L \"relay://:8443?tunnel=app.example.com:4d21094e-b74c-4916-86c1-d9fa36ea677b\" --gateway \"gateway://:9000?secretFile=/etc/tunnel/gateway.key\"\n\n\
    Rules: HOST:UUID routes HOST to a tunnel; HOST:$UUID makes the rule private (access clients only).\n\
    HOST may be example.org (exact), .example.com (it and its subdomains) or *.example.com (subdomains)."
)]
struct Cli {
    /// Relay service URL: relay://ADDR?entryPoint=...&tunnel=HOST:UUID,...&tunnel.direct=true
    #[arg(short = 'L', value_name = "URL", conflicts_with = "config")]
    listen: Option<String>,
    /// Configuration file (instead of -L): TOML, or GOST YAML when it ends in .yaml or .yml.
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    config: Option<String>,
    /// Token accepted for every tunnel (overrides the file's `token` or `tokenFile`).
    #[arg(long, env = "TUNNEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Sealed-address gateway: gateway://ADDR?secretFile=FILE&retry=1&timeout=3s&allowAddresses=HOST:PORT,...
    /// (repeatable; added to the file's [[gateway]] tables).
    #[arg(long = "gateway", value_name = "URL")]
    gateways: Vec<String>,
    /// Write the process ID to FILE once listening (overrides the file's `pidFile`).
    #[arg(long, value_name = "FILE")]
    pid_file: Option<String>,
    /// Read a password from standard input (one line) and print its argon2id hash, for an
    /// ingress rule's basicAuth = ["USER:HASH"]; then exit.
    #[arg(long, conflicts_with_all = ["listen", "config"])]
    hash_password: bool,
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    manage: Option<Manage>,
}

/// Tunnels as data: against a running server's admin API (`--api`), or offline against the
/// store of the server whose configuration `-C` names.
#[derive(clap::Subcommand)]
enum Manage {
    /// Tunnels: create (prints its connection token, once), list, show, delete, token (a new
    /// secret; the old one admits for --grace more, or not at all).
    Tunnel {
        #[command(subcommand)]
        op: TunnelOp,
        #[command(flatten)]
        api: Api,
    },
    /// Routes of stored tunnels: add, list, delete.
    Route {
        #[command(subcommand)]
        op: RouteOp,
        #[command(flatten)]
        api: Api,
    },
}

#[derive(clap::Args)]
struct Api {
    /// A running server's admin listener (`http://127.0.0.1:9100`); without it, -C FILE's
    /// store is changed offline.
    #[arg(long, env = "TUNNEL_API", global = true)]
    api: Option<String>,
    /// The admin listener's token.
    #[arg(long, env = "TUNNEL_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
}

#[derive(clap::Subcommand)]
enum TunnelOp {
    /// Makes a tunnel and prints its connection token (shown this once).
    Create {
        name: String,
        /// Its agents may ask for hostnames under this suffix (`dev.example.com`): tunnel-agent --hostname myapp.
        #[arg(long)]
        suffix: Option<String>,
        /// The hostnames its agents asked for stay when its last agent leaves.
        #[arg(long)]
        keep_hostnames: bool,
    },
    /// Lists the stored tunnels.
    List,
    /// Shows one tunnel (by name or ID).
    Show { tunnel: String },
    /// Deletes a tunnel, its secrets and routes; its sessions are closed.
    Delete { tunnel: String },
    /// A new secret and its connection token; the old secret admits for --grace more (default 0: revoked now).
    Token {
        tunnel: String,
        #[arg(long, default_value = "0s")]
        grace: String,
    },
}

#[derive(clap::Subcommand)]
enum RouteOp {
    /// Routes HOSTNAME (and PATH) to a stored tunnel, at once.
    Add {
        hostname: String,
        #[arg(long)]
        tunnel: String,
        #[arg(long)]
        path: Option<String>,
        /// Reached by access clients only.
        #[arg(long)]
        private: bool,
    },
    /// Lists the stored routes.
    List,
    /// Deletes a stored route.
    Delete {
        hostname: String,
        #[arg(long)]
        path: Option<String>,
    },
}

impl Manage {
    /// The request: method, path under `/api/v1/store/`, body.
    fn request(&self) -> (&'static str, String, serde_json::Value) {
        use serde_json::json;
        match self {
            Manage::Tunnel { op, .. } => match op {
                TunnelOp::Create { name, suffix, keep_hostnames } => (
                    "POST",
                    "tunnels".into(),
                    json!({ "name": name, "suffix": suffix, "keepHostnames": keep_hostnames }),
                ),
                TunnelOp::List => ("GET", "tunnels".into(), json!(null)),
                TunnelOp::Show { tunnel } => ("GET", format!("tunnels/{tunnel}"), json!(null)),
                TunnelOp::Delete { tunnel } => ("DELETE", format!("tunnels/{tunnel}"), json!(null)),
                TunnelOp::Token { tunnel, grace } => {
                    ("POST", format!("tunnels/{tunnel}/token"), json!({ "grace": grace }))
                }
            },
            Manage::Route { op, .. } => match op {
                RouteOp::Add { hostname, tunnel, path, private } => (
                    "POST",
                    "routes".into(),
                    json!({ "hostname": hostname, "tunnel": tunnel, "path": path, "private": private }),
                ),
                RouteOp::List => ("GET", "routes".into(), json!(null)),
                RouteOp::Delete { hostname, path } => {
                    ("DELETE", "routes".into(), json!({ "hostname": hostname, "path": path }))
                }
            },
        }
    }

    fn api(&self) -> &Api {
        match self {
            Manage::Tunnel { api, .. } | Manage::Route { api, .. } => api,
        }
    }
}

/// Runs a store operation and prints its answer: a connection token alone on standard output
/// (the rest on standard error), other answers as JSON.
fn manage(cmd: Manage, config: Option<&str>) -> anyhow::Result<()> {
    let (method, path, body) = cmd.request();
    let segments: Vec<&str> = path.split('/').collect();
    let (status, answer) = match (&cmd.api().api, config) {
        (Some(api), _) => tunnel_server::tunnels::remote(api, cmd.api().admin_token.as_deref(), method, &path, &body)?,
        (None, Some(file)) => {
            let config = FileConfig::load(file)?.validate(file)?;
            tunnel_server::tunnels::offline(&config, method, &segments, &body)?
        }
        (None, None) => bail!("give --api http://ADMIN-ADDR of a running server (and --admin-token), or -C FILE to change that server's store offline"),
    };
    if !(200..300).contains(&status) {
        bail!("{}", answer["error"].as_str().unwrap_or("refused"));
    }
    if let Some(token) = answer["token"].as_str() {
        eprintln!(
            "tunnel {} ({}): its connection token, shown this once:",
            answer["name"].as_str().unwrap_or(""),
            answer["tunnel"].as_str().unwrap_or("")
        );
        println!("{token}");
        eprintln!("connect an agent with: tunnel-agent --token TOKEN -L rtcp://:0/HOST:PORT");
        return Ok(());
    }
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.hash_password {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            bail!("no password on standard input (e.g. printf '%s' \"$PASSWORD\" | tunnel-server --hash-password)");
        }
        println!("{}", tunnel_server::http::auth::hash_password(password).map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    if let Some(cmd) = cli.manage {
        return manage(cmd, cli.config.as_deref());
    }
    cli.common.init();
    let (mut file, source) = match (&cli.listen, &cli.config) {
        (Some(url), None) => (FileConfig::from_url(url)?, "-L".to_owned()),
        (None, Some(path)) => (FileConfig::load(path)?, path.clone()),
        _ => bail!("give a relay service with -L relay://ADDR?... or a config file with -C FILE (see --help)"),
    };
    let origin = Origin {
        file: cli.config.clone(),
        token: cli.token.clone().map(tunnel_runtime::secret::Secret::new),
        admin: cli.common.admin.clone(),
        gateways: cli.gateways.clone(),
        pid_file: cli.pid_file.clone(),
    };
    origin.apply(&mut file)?;
    let mut config = file.validate(&source)?;
    config.origin = origin;
    if cli.common.check {
        let routes = config.routes();
        for warning in config.warnings().into_iter().chain(routes.token_warnings()).chain(routes.protection_warnings())
        {
            println!("{source}: warning: {warning}");
        }
    } else {
        // The routing table's warnings are logged by `Server::spawn`.
        for warning in config.warnings() {
            tracing::warn!(message = %warning);
        }
    }
    // `Server::shutdown` logs "shutting down" once its listeners are closed.
    let on_signal = "signal received: closing listeners (a second signal stops at once)";
    cli.common.check_or_run(&source, 0, || Server::spawn(config), on_signal)
}
