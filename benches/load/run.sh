#!/usr/bin/env bash
# Load comparison: tower-cache against what users would use instead, on
# this machine, in one run, with the same wrk settings, alternating the
# targets round by round. Writes results.json, chart.svg and results.md
# beside this script.
#
#   bash benches/load/run.sh            # 3 rounds of 8 s per target
#   ROUNDS=5 DURATION=10s bash benches/load/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-1}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

cargo build --release -q -p axum-example
cargo build --release -q -p tower-cache-benches --bins
cargo build --release -q -p tower-cache --example reverse_proxy
# The peers (benches/peers): a workspace and lock file of their own.
cargo build --release -q --manifest-path benches/peers/Cargo.toml --target-dir "$root/target"
bin="$root/target/release"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

REDIS_PORT=$(port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

start_app() { # port, env...
  local p=$1; shift
  env BIND="127.0.0.1:$p" RUST_LOG=warn "$@" "$bin/axum-example" >/dev/null 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$p/health"
}
L1=$(port); L2=$(port); SLOW=$(port); HAND=$(port); NGX=$(port); PROXY=$(port); PEERS=$(port)
start_app "$L1"
start_app "$L2" REDIS_URL="$REDIS_URL" CACHE_L1=off CACHE_HOT_KEYS=off
start_app "$SLOW" ORIGIN_DELAY_MS=2
env BIND="127.0.0.1:$HAND" REDIS_URL="$REDIS_URL" "$bin/handwritten" >/dev/null 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$HAND/moka/products/42"

# tower-http-cache, hitbox and http-cache-tower, each behind axum with
# moka and a 1 h TTL, under /<peer>/products/{id}.
env BIND="127.0.0.1:$PEERS" "$bin/peer_server" >/dev/null 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$PEERS/origin-calls"

sed -e "s|@PORT@|$NGX|" -e "s|@UPSTREAM@|127.0.0.1:$L1|" -e "s|@DIR@|$work|g" "$here/nginx.conf.in" > "$work/nginx.conf"
mkdir -p "$work/cache"
# nginx workers drop root: let them reach the cache directory.
chmod 755 "$work"; chmod 777 "$work/cache"
"$NGINX" -c "$work/nginx.conf" -p "$work" &
pids+=($!)
wait_http "http://127.0.0.1:$NGX/uncached/products/42"

# The reverse_proxy example in front of the same origin as nginx: both
# keep /uncached/products/42 for the minute its Cache-Control gives.
env UPSTREAM="127.0.0.1:$L1" BIND="127.0.0.1:$PROXY" RUST_LOG=warn "$bin/examples/reverse_proxy" >/dev/null 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$PROXY/uncached/products/42"

# name | url | extra wrk header | wrk script. The miss path asks for a
# random product on each request and revalidates (no-cache), so every
# request is a load that goes through the cache and is stored; the
# uncached route gets the same random ids.
targets=(
  "tower-cache L1 hit|http://127.0.0.1:$L1/products/42||"
  "hand-written moka|http://127.0.0.1:$HAND/moka/products/42||"
  "static in-memory route|http://127.0.0.1:$L1/static/product||"
  "nginx proxy_cache hit|http://127.0.0.1:$NGX/uncached/products/42||"
  "tower-cache reverse_proxy hit|http://127.0.0.1:$PROXY/uncached/products/42||"
  "tower-http-cache hit|http://127.0.0.1:$PEERS/tower-http-cache/products/42||"
  "hitbox hit|http://127.0.0.1:$PEERS/hitbox/products/42||"
  "http-cache-tower hit|http://127.0.0.1:$PEERS/http-cache-tower/products/42||"
  "tower-cache L2 hit|http://127.0.0.1:$L2/products/42||"
  "hand-written redis-rs|http://127.0.0.1:$HAND/redis/products/42||"
  "tower-cache miss path, 2 ms origin|http://127.0.0.1:$SLOW/products/1|Cache-Control: no-cache|$here/random_ids.lua"
  "uncached route, 2 ms origin|http://127.0.0.1:$SLOW/uncached/products/1||$here/random_ids.lua"
)
for t in "${targets[@]}"; do IFS='|' read -r _ url _ _ <<<"$t"; curl -fs -o /dev/null "$url"; curl -fs -o /dev/null "$url"; done
# Each peer's handler runs once, for the first request; every later one
# must be a hit (tower-http-cache marks none in its headers).
peer_calls() {
  local n; n="$(curl -fs "http://127.0.0.1:$PEERS/origin-calls")"
  [ "$n" = 3 ] || { echo "peer_server: the handler ran $n times $1, not 3: not every request was a hit" >&2; exit 1; }
}
peer_calls "after the warm-up"

out="$work/raw.txt"
: > "$out"
for round in $(seq 1 "$ROUNDS"); do
  for t in "${targets[@]}"; do
    IFS='|' read -r name url header script <<<"$t"
    args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency)
    [ -n "$header" ] && args+=(-H "$header")
    [ -n "$script" ] && args+=(-s "$script")
    echo "round $round: $name" >&2
    { echo "=== $round|$name"; wrk "${args[@]}" "$url"; } >> "$out"
  done
done

peer_calls "after the rounds"

"$bin/l1_memory" > "$work/memory.txt"
cat "$work/memory.txt" >&2
python3 "$here/report.py" "$out" "$work/memory.txt" "$here" \
  "rounds=$ROUNDS duration=$DURATION connections=$CONNECTIONS threads=$THREADS"
