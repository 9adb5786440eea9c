#!/usr/bin/env bash
# Redis's own time per L2 hit: starts a redis-server on a free port, runs
# `l2_hits N` against it (which resets the statistics after its warm-up)
# and prints INFO commandstats, usec_per_call by command, and the server
# time per hit. With `raw` as second argument, a hand-written redis-rs GET
# instead, for comparison.
#
#   bash benches/load/l2_commandstats.sh 10000
#   bash benches/load/l2_commandstats.sh 10000 raw
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
N="${1:-10000}"

cargo build --release -q -p tower-cache-benches --bin l2_hits
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
work="$(mktemp -d)"
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
redis_pid=$!
cleanup() { kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
REDIS_URL="redis://127.0.0.1:$port" "$root/target/release/l2_hits" "$N" "${2:-}"
