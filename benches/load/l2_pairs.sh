#!/usr/bin/env bash
# L2 hit over HTTP against hand-written redis-rs, round by round: the
# example app (`CACHE_L1=off CACHE_HOT_KEYS=off`, every hit read from
# Redis) and the hand-written handler of `benches/src/bin/handwritten.rs`
# take turns (the order rotating each round) on one Redis, each for
# DURATION with `wrk -t1 -c32`; Redis, the servers and wrk run at
# real-time priority (`chrt -r 50`, when allowed) so that other work on
# the machine interleaves less. Prints each round's requests/s and ratio,
# and each server's CPU time per request (user and system, from /proc,
# the kernel's share included), then the medians.
#
#   bash benches/load/l2_pairs.sh                       # 10 rounds of 5 s
#   ROUNDS=12 DURATION=5s bash benches/load/l2_pairs.sh
#   BEFORE=/path/to/older/axum-example bash benches/load/l2_pairs.sh   # a third server
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
ROUNDS="${ROUNDS:-10}"
DURATION="${DURATION:-5s}"
BEFORE="${BEFORE:-}"

command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p axum-example
cargo build --release -q -p tower-cache-benches --bin handwritten
bin="$root/target/release"
rt=()
if chrt -r 50 true 2>/dev/null; then rt=(chrt -r 50); fi

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 400); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

redis_port=$(port)
"${rt[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
export REDIS_URL="redis://127.0.0.1:$redis_port" RUST_LOG=warn

names=(app hand)
declare -A pid
app=$(port); hand=$(port)
urls=("http://127.0.0.1:$app/products/42" "http://127.0.0.1:$hand/redis/products/42")
env BIND="127.0.0.1:$app" CACHE_L1=off CACHE_HOT_KEYS=off "${rt[@]}" "$bin/axum-example" >/dev/null 2>&1 &
pids+=($!); pid[app]=$!
env BIND="127.0.0.1:$hand" "${rt[@]}" "$bin/handwritten" >/dev/null 2>&1 &
pids+=($!); pid[hand]=$!
if [ -n "$BEFORE" ]; then
  before=$(port)
  names+=(before)
  urls+=("http://127.0.0.1:$before/products/42")
  env BIND="127.0.0.1:$before" CACHE_L1=off CACHE_HOT_KEYS=off "${rt[@]}" "$BEFORE" >/dev/null 2>&1 &
  pids+=($!); pid[before]=$!
fi
for url in "${urls[@]}"; do
  wait_http "$url"
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$url"; done
done

# CPU time (user + system) a process has used, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"
n=${#names[@]}
declare -A rps cpu
for round in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((n - 1))); do
    i=$(( (k + round) % n ))
    name=${names[$i]}
    t0="$(ticks "${pid[$name]}")"
    out="$("${rt[@]}" wrk -t1 -c32 -d"$DURATION" "${urls[$i]}")"
    t1="$(ticks "${pid[$name]}")"
    rps[$round,$name]="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    requests="$(awk '/requests in/ {print $1}' <<<"$out")"
    cpu[$round,$name]="$(python3 -c "print(f'{($t1 - $t0) / $hz / $requests * 1e6:.2f}')")"
  done
  line="round $round:"
  for name in "${names[@]}"; do line="$line $name ${rps[$round,$name]} (${cpu[$round,$name]} us cpu)"; done
  line="$line app/hand $(python3 -c "print(f'{${rps[$round,app]}/${rps[$round,hand]}:.3f}')")"
  if [ -n "$BEFORE" ]; then
    line="$line before/hand $(python3 -c "print(f'{${rps[$round,before]}/${rps[$round,hand]}:.3f}')")"
  fi
  echo "$line"
done
median() { # lines of numbers
  sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f\n", m}'
}
ratios() { # name: its requests/s over the hand-written handler's, each round
  for round in $(seq 1 "$ROUNDS"); do python3 -c "print(${rps[$round,$1]}/${rps[$round,hand]})"; done
}
cpus() { # name
  for round in $(seq 1 "$ROUNDS"); do echo "${cpu[$round,$1]}"; done
}
echo "median app/hand: $(ratios app | median) over $ROUNDS rounds of $DURATION"
if [ -n "$BEFORE" ]; then echo "median before/hand: $(ratios before | median)"; fi
for name in "${names[@]}"; do echo "median CPU per request, $name: $(cpus "$name" | median) us"; done
