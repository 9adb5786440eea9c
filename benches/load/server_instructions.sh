#!/usr/bin/env bash
# Instructions a server spends per HTTP request, counted in the server
# itself under callgrind: starts a redis-server on a free port and the
# server under `valgrind --tool=callgrind` (instrumentation off while it
# starts), warms it up with keep-alive requests, then counts N more
# (instrumentation on) and divides. Counts do not depend on the machine's
# load; the client (Python's http.client) is outside the count.
#
#   bash benches/load/server_instructions.sh l2      # example app, CACHE_L1=off CACHE_HOT_KEYS=off
#   bash benches/load/server_instructions.sh redis   # hand-written redis-rs handler
#   bash benches/load/server_instructions.sh l1      # example app, L1 only (no Redis)
#   bash benches/load/server_instructions.sh moka    # hand-written moka handler
#   N=4000 bash benches/load/server_instructions.sh l2
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
TARGET="${1:-l2}"
N="${N:-2000}"
WARM="${WARM:-300}"

case "$TARGET" in
  l2 | l1) exe="$root/target/release/axum-example"; path=/products/42 ;;
  redis) exe="$root/target/release/handwritten"; path=/redis/products/42 ;;
  moka) exe="$root/target/release/handwritten"; path=/moka/products/42 ;;
  *) echo "unknown target '$TARGET' (l2, redis, l1, moka)" >&2; exit 2 ;;
esac
cargo build --release -q -p axum-example
cargo build --release -q -p tower-cache-benches --bin handwritten

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
redis_port="$(free_port)"
port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
pids+=($!)
for _ in $(seq 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

export BIND="127.0.0.1:$port" RUST_LOG=warn
case "$TARGET" in
  l2) export REDIS_URL="redis://127.0.0.1:$redis_port" CACHE_L1=off CACHE_HOT_KEYS=off ;;
  l1) unset REDIS_URL REDIS_CLUSTER_URLS ;;
  *) export REDIS_URL="redis://127.0.0.1:$redis_port" ;;
esac
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.%p" "$exe" >"$work/server.log" 2>&1 &
server=$!
pids+=("$server")

# Keep-alive GETs of one path, each answered 200.
requests() { # count
  python3 - "$port" "$path" "$1" <<'EOF'
import http.client, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
EOF
}
up=0
for _ in $(seq 600); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; then
    up=1
    break
  fi
  sleep 0.2
done
if [ "$up" != 1 ]; then
  tail -n 20 "$work/server.log" >&2
  echo "error: the server did not start under valgrind" >&2
  exit 1
fi
requests "$WARM"
callgrind_control -i on "$server" >/dev/null 2>&1
# The first dump ends the warm-up's tail; the second holds the N requests.
callgrind_control -d "$server" >/dev/null 2>&1
requests "$N"
callgrind_control -d "$server" >/dev/null 2>&1
sleep 1
dump="$(ls -t "$work"/cg."$server"* | head -n 1)"
total="$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$dump" | head -n 1)"
echo "$TARGET: $((total / N)) instructions per request ($N requests, $path)"
