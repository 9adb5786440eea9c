"""Turns wrk output into results.json, results.md and chart.svg."""
import json
import re
import statistics
import sys
from pathlib import Path

raw, memory, outdir, settings = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]


def ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


runs: dict[str, list[dict]] = {}
order: list[str] = []
for block in open(raw).read().split("=== ")[1:]:
    head, body = block.split("\n", 1)
    _, name = head.split("|", 1)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", body).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", body).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", body).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", body)
    if name not in runs:
        order.append(name)
    runs.setdefault(name, []).append(
        {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": int(errors.group(1)) if errors else 0}
    )

summary = {
    name: {
        "rps": statistics.median(r["rps"] for r in runs[name]),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs[name]),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs[name]),
        "non2xx": sum(r["non2xx"] for r in runs[name]),
        "rounds": [r["rps"] for r in runs[name]],
    }
    for name in order
}
mem = dict(kv.split("=", 1) for kv in open(memory).read().split()[1:])


def ratio(a: str, b: str) -> float:
    return summary[a]["rps"] / summary[b]["rps"]


ratios = {
    "L1 hit / hand-written moka (target >= 0.95)": ratio("tower-cache L1 hit", "hand-written moka"),
    "L1 hit / nginx proxy_cache hit (target >= 1.0)": ratio("tower-cache L1 hit", "nginx proxy_cache hit"),
    "reverse_proxy hit / nginx proxy_cache hit (same origin)": ratio(
        "tower-cache reverse_proxy hit", "nginx proxy_cache hit"
    ),
    "L1 hit / static in-memory route (upper bound)": ratio("tower-cache L1 hit", "static in-memory route"),
    "L2 hit / hand-written redis-rs (target >= 0.9)": ratio("tower-cache L2 hit", "hand-written redis-rs"),
    "miss path / uncached route (target >= 0.95)": ratio(
        "tower-cache miss path, 2 ms origin", "uncached route, 2 ms origin"
    ),
    "L1 hit / uncached route, 2 ms origin (the saving)": ratio(
        "tower-cache L1 hit", "uncached route, 2 ms origin"
    ),
    "L1 resident memory / capacity (target <= 1.25)": float(mem["ratio"]),
}
for peer in ("tower-http-cache", "hitbox", "http-cache-tower"):
    ratios[f"{peer} hit / hand-written moka"] = ratio(f"{peer} hit", "hand-written moka")
outdir.joinpath("results.json").write_text(
    json.dumps({"settings": settings, "summary": summary, "ratios": ratios, "memory": mem}, indent=2)
)

lines = [f"Settings: {settings}.", "", "| target | requests/s (median) | p50 ms | p99 ms | non-2xx | requests/s per round |", "|---|---:|---:|---:|---:|---|"]
for name in order:
    s = summary[name]
    rounds = ", ".join(f"{r:.0f}" for r in s["rounds"])
    lines.append(f"| {name} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['non2xx']} | {rounds} |")
lines += ["", "| ratio | value |", "|---|---:|"]
lines += [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
lines += ["", f"L1 memory: {memory and open(memory).read().strip()}"]
outdir.joinpath("results.md").write_text("\n".join(lines) + "\n")

# A horizontal bar chart of requests/s, as plain SVG.
width, bar_h, gap, left = 900, 26, 10, 300
top = max(s["rps"] for s in summary.values())
height = 60 + len(order) * (bar_h + gap)
svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">',
    f'<text x="10" y="24" font-size="16" font-weight="bold">Requests/s, median of rounds (higher is better)</text>',
]
for i, name in enumerate(order):
    y = 44 + i * (bar_h + gap)
    w = (width - left - 110) * summary[name]["rps"] / top
    color = "#2b7bb9" if name.startswith("tower-cache") else "#999999"
    svg.append(f'<text x="{left - 8}" y="{y + 18}" text-anchor="end">{name}</text>')
    svg.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
    svg.append(f'<text x="{left + w + 6:.1f}" y="{y + 18}">{summary[name]["rps"]:.0f}</text>')
svg.append("</svg>")
outdir.joinpath("chart.svg").write_text("\n".join(svg) + "\n")
print("\n".join(lines))
