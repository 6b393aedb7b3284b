//! `tunnel-access`: parses the command line, loads the config, serves until SIGINT/SIGTERM.

use clap::Parser;
use tunnel_access::{Access, FileConfig};
use tunnel_runtime::cli::ClientArgs;

/// Reach private tunnels: local listeners whose connections are carried through the server
/// to a tunnel's agents.
#[derive(Parser, Debug)]
#[command(
    version = tunnel_runtime::cli::VERSION,
    after_help = "Examples:\n  \
    tunnel-access -L tcp://:2222/ssh.srv-2.local -F \"relay://server:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a\"\n  \
    tunnel-access -L \"tcp://:8000?sniffing=true\" -F \"relay://server:8443?tunnel.id=ac74d9dd-3125-442a-a7c1-f9e49e05faca\"\n  \
    tunnel-access -L udp://:1053/dns.srv-2.local -F \"relay://server:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a\"\n  \
    tunnel-access -L tcp://:2222/ssh.srv-2.local -F socks5://proxy:1080 -F \"relay://server:8443?tunnel.id=aede1f6a-762b-45da-b937-b6632356555a\"\n  \
    tunnel-access -C access.toml",
    mut_arg("services", |a| a.help("Listener (repeatable): tcp://ADDR/HOSTNAME or tcp://ADDR?sniffing=true (ADDR may be a port range), udp://ADDR/HOSTNAME[?keepalive=true&ttl=5s]."))
)]
struct Cli {
    #[command(flatten)]
    args: ClientArgs,
}

fn main() -> anyhow::Result<()> {
    let usage = "give listeners and a server with -L tcp://:PORT/HOSTNAME (or udp://:PORT/HOSTNAME) -F relay://SERVER?tunnel.id=UUID, or a file with -C FILE (see --help)";
    Cli::parse().args.main::<FileConfig, _, _, _>(usage, Access::spawn)
}
