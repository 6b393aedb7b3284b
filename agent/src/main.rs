//! `tunnel-agent`: parses the command line, loads the config, serves until SIGINT/SIGTERM.

use clap::Parser;
use tunnel_agent::{Agent, FileConfig};
use tunnel_runtime::cli::ClientArgs;

/// The private side of tunnel: joins a tunnel on the server and carries its streams to local
/// targets.
#[derive(Parser, Debug)]
#[command(
    version = tunnel_runtime::cli::VERSION,
    after_help = "Examples:\n  \
    tunnel-agent -L rtcp://:0/192.168.1.1:80 -F \"relay://server:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b\"\n  \
    tunnel-agent -L rtcp://:0/:22 -F \"relay://server:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a&token=SECRET\"\n  \
    tunnel-agent -L rudp://:0/192.168.2.1:53 -F \"relay://server:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a\"\n  \
    tunnel-agent -L \"rtcp://:0/10.0.0.1:80,10.0.0.2:80?strategy=round&maxFails=1&failTimeout=30s\" -F \"relay://server:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b\"\n  \
    tunnel-agent -L rtcp://:0/:80 -F http://user:pass@proxy:3128 -F \"relay+tls://server:8443?tunnel.id=4d21094e-b74c-4916-86c1-d9fa36ea677b\"\n  \
    tunnel-agent -C agent.toml",
    mut_arg("services", |a| a.help("Service (repeatable): rtcp://:0/HOST:PORT[,HOST:PORT...] for TCP targets, rudp://:0/HOST:PORT for UDP targets (a target for every hostname).")),
    mut_arg("relay", |a| a.help("The server: relay://HOST:PORT?tunnel.id=UUID[&token=T | &tokenFile=FILE][&weight=N]; a proxy on the way is a -F before it: -F http://[USER:PASS@]HOST:PORT or -F socks5://[USER:PASS@]HOST:PORT"))
)]
struct Cli {
    #[command(flatten)]
    args: ClientArgs,
}

fn main() -> anyhow::Result<()> {
    let usage = "give services and a server with -L rtcp://:0/HOST:PORT (or rudp://:0/HOST:PORT) -F relay://SERVER?tunnel.id=UUID, or a file with -C FILE (see --help)";
    Cli::parse().args.main::<FileConfig, _, _, _>(usage, Agent::spawn)
}
