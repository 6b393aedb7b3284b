#!/usr/bin/env bash
# Builds tunnel and runs a working tunnel on this machine:
#   a small web origin (python3 http.server)  <- tunnel-agent  -> tunnel-server <- curl
# Everything listens on 127.0.0.1. Ports can be changed with the environment variables below.
# Stop with Ctrl-C; every process started here is stopped with it.
set -euo pipefail

RELAY_PORT=${RELAY_PORT:-8443}      # agents and access clients connect here
PUBLIC_PORT=${PUBLIC_PORT:-8080}    # the public entrypoint visitors use
ORIGIN_PORT=${ORIGIN_PORT:-8000}    # the private web server behind the agent
ACCESS_PORT=${ACCESS_PORT:-8001}    # the access client's local listener
TUNNEL=4d21094e-b74c-4916-86c1-d9fa36ea677b
PRIVATE=ac74d9dd-3125-442a-a7c1-f9e49e05faca

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

$bin/tunnel-server -L "relay://127.0.0.1:$RELAY_PORT?entryPoint=127.0.0.1:$PUBLIC_PORT&tunnel=.example.com:$TUNNEL,private.local:\$$PRIVATE" &
pids+=($!)
$bin/tunnel-agent -L "rtcp://:0/127.0.0.1:$ORIGIN_PORT" -F "relay://127.0.0.1:$RELAY_PORT?tunnel.id=$TUNNEL" &
pids+=($!)
$bin/tunnel-agent -L "rtcp://:0/127.0.0.1:$ORIGIN_PORT" -F "relay://127.0.0.1:$RELAY_PORT?tunnel.id=$PRIVATE" &
pids+=($!)
$bin/tunnel-access -L "tcp://127.0.0.1:$ACCESS_PORT/private.local" -F "relay://127.0.0.1:$RELAY_PORT?tunnel.id=$PRIVATE" &
pids+=($!)

sleep 1
cat <<MSG

The tunnel is up. Try:
  curl -H 'Host: www.example.com' http://127.0.0.1:$PUBLIC_PORT/     # public rule .example.com -> agent -> origin
  curl -H 'Host: nowhere.test'    http://127.0.0.1:$PUBLIC_PORT/     # no rule: 404
  curl -H 'Host: private.local'   http://127.0.0.1:$PUBLIC_PORT/     # private rule: 404 from the public side
  curl http://127.0.0.1:$ACCESS_PORT/                                # the private rule, through tunnel-access
Press Ctrl-C to stop.
MSG
wait
