#!/usr/bin/env bash
# The read rate one hot key reaches on a 3-master Redis Cluster, without
# and with hot-key replicas: starts the cluster on free ports, runs
# `hot_key` against it twice and prints what each master spent per read.
#
#   bash benches/load/hot_key.sh            # 5 s, 64 readers, 6 replicas
#   bash benches/load/hot_key.sh 10 128 5   # seconds, readers, replicas
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
SECONDS_EACH="${1:-5}"
READERS="${2:-64}"
REPLICAS="${3:-6}"

cargo build --release -q -p tower-cache-benches --bin hot_key
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
nodes=()
urls=()
for i in 0 1 2; do
  port="$(free_port)"
  mkdir -p "$work/$i"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$work/$i/nodes.conf" --save "" --appendonly no \
    --dir "$work/$i" >/dev/null &
  pids+=($!)
  nodes+=("127.0.0.1:$port")
  urls+=("redis://127.0.0.1:$port")
done
for node in "${nodes[@]}"; do
  for _ in $(seq 100); do
    redis-cli -p "${node##*:}" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 200); do
  ok=1
  for node in "${nodes[@]}"; do
    redis-cli -p "${node##*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
  done
  [ "$ok" = 1 ] && break
  sleep 0.1
done
export REDIS_CLUSTER_URLS
REDIS_CLUSTER_URLS="$(IFS=,; echo "${urls[*]}")"
"$root/target/release/hot_key" "$SECONDS_EACH" "$READERS" 0
"$root/target/release/hot_key" "$SECONDS_EACH" "$READERS" "$REPLICAS"
