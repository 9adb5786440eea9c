#!/usr/bin/env bash
# Instructions per L1 hit under callgrind: tower-cache, its bounds (a
# static axum route and the hand-written moka handler) and the Rust peers
# (benches/peers), each answering the same 48-byte JSON in process on one
# thread. For each target, the difference of the "Collected" totals of
# `<bin> <target> $HITS` and `<bin> <target> 0`, over $HITS, is the cost of
# one hit; counts do not depend on the machine's load. Writes results.md
# and chart.svg beside this script.
#
#   bash benches/instructions/run.sh
#   TARGETS="hitbox http-cache-tower" bash benches/instructions/run.sh
#   HITS=20000 bash benches/instructions/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

HITS="${HITS:-10000}"
ALL="static moka tower-cache tower-http-cache hitbox http-cache-tower"
TARGETS="${TARGETS:-$ALL}"
WORKSPACE_TARGETS=" static moka tower-cache "
PEER_TARGETS=" tower-http-cache hitbox http-cache-tower "

selected=()
for t in $ALL; do # the report's order, whatever the order asked
  case " $TARGETS " in *" $t "*) selected+=("$t") ;; esac
done
for t in $TARGETS; do
  case " $ALL " in *" $t "*) ;; *) echo "unknown target '$t' (targets: $ALL)" >&2; exit 2 ;; esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v valgrind >/dev/null; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release"
need_workspace=0; need_peers=0
for t in "${selected[@]}"; do
  case "$WORKSPACE_TARGETS" in *" $t "*) need_workspace=1 ;; esac
  case "$PEER_TARGETS" in *" $t "*) need_peers=1 ;; esac
done
if [ "$need_workspace" = 1 ]; then
  cargo build --release -q -p tower-cache-benches --bin l1_hits
fi
if [ "$need_peers" = 1 ]; then
  # Its own workspace and lock file; built into the same target directory.
  cargo build --release -q --manifest-path benches/peers/Cargo.toml --target-dir "$target_dir"
fi

# The "Collected" total of one run, or a clear failure.
collected() { # binary target n
  local log rc=0
  log="$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" "$3" 2>&1)" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "$log" | tail -n 20 >&2
    echo "error: '$(basename "$1") $2 $3' failed under callgrind (exit $rc); it must take <target> <N>" >&2
    exit 1
  fi
  local total
  total="$(echo "$log" | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' | tail -n 1)"
  if [ -z "$total" ]; then
    echo "$log" | tail -n 20 >&2
    echo "error: no 'Collected' total in callgrind's output for '$(basename "$1") $2 $3'" >&2
    exit 1
  fi
  echo "$total"
}

rows=()
for t in "${selected[@]}"; do
  case "$WORKSPACE_TARGETS" in *" $t "*) exe="$bin/l1_hits" ;; *) exe="$bin/peer_hits" ;; esac
  echo "callgrind: $(basename "$exe") $t 0 and $HITS" >&2
  base="$(collected "$exe" "$t" 0)"
  total="$(collected "$exe" "$t" "$HITS")"
  per_hit=$(( (total - base) / HITS ))
  # A binary that ignores its arguments (l1_hits before it took
  # <target> <N>) runs the same work twice: no difference to speak of.
  if [ "$per_hit" -lt 100 ]; then
    echo "error: '$(basename "$exe") $t 0' and '... $t $HITS' differ by $per_hit instructions a hit ($base vs $total):" >&2
    echo "       $(basename "$exe") does not take <target> <N> (targets:$WORKSPACE_TARGETS)" >&2
    exit 1
  fi
  echo "  $t: $per_hit instructions a hit" >&2
  rows+=("$t=$per_hit")
done

python3 - "$here" "$HITS" "$(valgrind --version)" "${rows[@]}" <<'EOF'
"""results.md and chart.svg from target=instructions pairs."""
import sys
from pathlib import Path

outdir, hits, valgrind = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rows = [(name, int(n)) for name, n in (arg.split("=", 1) for arg in sys.argv[4:])]
counts = dict(rows)
moka = counts.get("moka")
about = {
    "static": "static axum route (upper bound)",
    "moka": "hand-written moka handler",
    "tower-cache": "tower-cache `CacheAsideLayer`, `MemoryStore`",
    "tower-http-cache": "tower-http-cache 0.6, `InMemoryBackend`",
    "hitbox": "hitbox-tower 0.2, `hitbox-moka`",
    "http-cache-tower": "http-cache-tower 1.0.0-alpha.9, `MokaManager`",
}

lines = [
    f"Instructions per L1 hit: the difference of callgrind's totals over {hits:,} hits and 0 hits,",
    f"over {hits:,} ({valgrind}).",
    "",
    "| target | what | instructions per hit | ratio to moka |",
    "|---|---|---:|---:|",
]
for name, n in rows:
    ratio = f"{n / moka:.2f}" if moka else "–"
    lines.append(f"| {name} | {about[name]} | {n:,} | {ratio} |")
(outdir / "results.md").write_text("\n".join(lines) + "\n")

# A horizontal bar chart, as plain SVG.
width, bar_h, gap, left = 900, 26, 10, 200
top = max(n for _, n in rows)
height = 60 + len(rows) * (bar_h + gap)
svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">',
    '<text x="10" y="24" font-size="16" font-weight="bold">Instructions per L1 hit, callgrind (lower is better)</text>',
]
for i, (name, n) in enumerate(rows):
    y = 44 + i * (bar_h + gap)
    w = (width - left - 150) * n / top
    color = "#2b7bb9" if name == "tower-cache" else "#999999"
    label = f"{n:,}" + (f" ({n / moka:.2f}x moka)" if moka else "")
    svg.append(f'<text x="{left - 8}" y="{y + 18}" text-anchor="end">{name}</text>')
    svg.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
    svg.append(f'<text x="{left + w + 6:.1f}" y="{y + 18}">{label}</text>')
svg.append("</svg>")
(outdir / "chart.svg").write_text("\n".join(svg) + "\n")
print("\n".join(lines))
EOF
