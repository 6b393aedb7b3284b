#!/usr/bin/env bash
# Builds tunnel and runs a working tunnel on this machine, the way an operator adds one:
#   a small web origin (python3 http.server)  <- tunnel-agent  -> tunnel-server <- curl
# 1. the server starts (relay, a public entrypoint, the admin listener on loopback);
# 2. `tunnel-server tunnel create` makes a tunnel and prints its connection token;
# 3. `tunnel-agent --token TOKEN` connects with that alone;
# 4. `tunnel-server route add` routes a hostname to it, served at once.
# A second tunnel gets a private route, reached through tunnel-access with its own token.
# Everything listens on 127.0.0.1. Ports can be changed with the environment variables below.
# Stop with Ctrl-C; every process started here is stopped with it.
set -euo pipefail

RELAY_PORT=${RELAY_PORT:-8443}      # agents and access clients connect here
PUBLIC_PORT=${PUBLIC_PORT:-8080}    # the public entrypoint visitors use
ORIGIN_PORT=${ORIGIN_PORT:-8000}    # the private web server behind the agent
ACCESS_PORT=${ACCESS_PORT:-8001}    # the access client's local listener
ADMIN_PORT=${ADMIN_PORT:-9100}      # the admin listener: status page, API, metrics

cd "$(dirname "$0")/.."
cargo build --release --bins
bin=target/release

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "hello from the private origin" > "$work/index.html"
python3 -m http.server "$ORIGIN_PORT" --bind 127.0.0.1 --directory "$work" >"$work/origin.log" 2>&1 &
pids+=($!)

cat >"$work/server.toml" <<TOML
addr = "127.0.0.1:$RELAY_PORT"
entryPoint = "127.0.0.1:$PUBLIC_PORT"
stateDir = "$work/state"
[admin]
addr = "127.0.0.1:$ADMIN_PORT"
TOML
$bin/tunnel-server -C "$work/server.toml" &
pids+=($!)
api="http://127.0.0.1:$ADMIN_PORT"
for _ in $(seq 100); do
  curl -fsS "$api/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

web=$($bin/tunnel-server tunnel create web --api "$api")
$bin/tunnel-agent --token "$web" -L "rtcp://:0/127.0.0.1:$ORIGIN_PORT" &
pids+=($!)
$bin/tunnel-server route add www.example.com --tunnel web --api "$api" >/dev/null

internal=$($bin/tunnel-server tunnel create internal --api "$api")
$bin/tunnel-agent --token "$internal" -L "rtcp://:0/127.0.0.1:$ORIGIN_PORT" &
pids+=($!)
$bin/tunnel-server route add private.local --tunnel internal --private --api "$api" >/dev/null
$bin/tunnel-access --token "$internal" -L "tcp://127.0.0.1:$ACCESS_PORT/private.local" &
pids+=($!)

cat <<MSG

The tunnels are up. Try:
  curl -H 'Host: www.example.com' http://127.0.0.1:$PUBLIC_PORT/     # route -> tunnel web -> agent -> origin
  curl -H 'Host: nowhere.test'    http://127.0.0.1:$PUBLIC_PORT/     # no route: 404
  curl -H 'Host: private.local'   http://127.0.0.1:$PUBLIC_PORT/     # private route: 404 from the public side
  curl http://127.0.0.1:$ACCESS_PORT/                                # the private route, through tunnel-access
  $bin/tunnel-server tunnel list --api $api                          # the stored tunnels
  open $api/ in a browser: the status page (create tunnels and routes there too)
Press Ctrl-C to stop.
MSG
wait
