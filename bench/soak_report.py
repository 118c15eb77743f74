"""Summarizes a soak run (bench/soak.sh): an SVG plot of RSS and open file descriptors per
minute, and a Markdown summary with the flatness check (RSS after warm-up).

usage: soak_report.py CSV LOAD_PLAIN_JSON LOAD_STREAM_JSON RATE FAULTS
"""

import csv
import json
import sys
from pathlib import Path

WARMUP_MIN = 5


def last_json(path):
    lines = [line for line in Path(path).read_text().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def svg(rows, out):
    w, h, pad = 720, 320, 50
    minutes = [int(r["minute"]) for r in rows]
    rss = [int(r["rss_kib"]) / 1024 for r in rows]
    fds = [int(r["fds"]) for r in rows]
    xmax = max(minutes) or 1
    ymax_rss = max(rss) * 1.25 or 1
    ymax_fd = max(fds) * 1.25 or 1

    def x(m):
        return pad + (w - 2 * pad) * m / xmax

    def y(v, top):
        return h - pad - (h - 2 * pad) * v / top

    def line(vals, top, color):
        pts = " ".join(f"{x(m):.1f},{y(v, top):.1f}" for m, v in zip(minutes, vals))
        return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>'

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="black"/>',
        f'<line x1="{w-pad}" y1="{pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
        line(rss, ymax_rss, "#1f77b4"),
        line(fds, ymax_fd, "#d62728"),
        f'<text x="{w/2}" y="{h-15}" text-anchor="middle">minutes</text>',
        f'<text x="{pad}" y="{pad-10}" fill="#1f77b4">RSS (MiB, left; max {ymax_rss/1.25:.1f})</text>',
        f'<text x="{w-pad}" y="{pad-10}" fill="#d62728" text-anchor="end">open fds (right; max {ymax_fd/1.25:.0f})</text>',
    ]
    for frac in (0, 0.5, 1):
        parts.append(f'<text x="{pad-5}" y="{y(ymax_rss*frac, ymax_rss)+4:.1f}" text-anchor="end">{ymax_rss*frac:.0f}</text>')
        parts.append(f'<text x="{w-pad+5}" y="{y(ymax_fd*frac, ymax_fd)+4:.1f}">{ymax_fd*frac:.0f}</text>')
        parts.append(f'<text x="{x(xmax*frac):.1f}" y="{h-pad+15}" text-anchor="middle">{xmax*frac:.0f}</text>')
    parts.append("</svg>")
    out.write_text("\n".join(parts) + "\n")


def main():
    path, plain, stream, rate, faults = sys.argv[1:6]
    rows = list(csv.DictReader(open(path)))
    out_svg = Path(path).with_suffix(".svg")
    svg(rows, out_svg)
    after = [r for r in rows if int(r["minute"]) >= WARMUP_MIN]
    rss = [int(r["rss_kib"]) / 1024 for r in after]
    fds = [int(r["fds"]) for r in after]
    first, last = rows[0], rows[-1]
    shares = [float(r["model_served_share"]) for r in rows[1:] if r["model_served_share"]]
    summary = {
        "minutes": int(last["minute"]),
        "rate": int(rate),
        "faults": faults,
        "rss_mib_after_warmup": {"min": min(rss), "max": max(rss), "first": rss[0], "last": rss[-1]},
        "rss_growth_after_warmup_mib": rss[-1] - rss[0],
        "fds_after_warmup": {"min": min(fds), "max": max(fds)},
        "traces_recorded": int(last["traces_recorded"]),
        "traces_written": int(last["traces_written"]),
        "traces_dropped": int(last["traces_dropped"]),
        "traces_failed": int(last["traces_failed"]),
        "model_served_share_per_minute": {"min": min(shares), "mean": sum(shares) / len(shares)} if shares else None,
        "load_plain": last_json(plain),
        "load_stream": last_json(stream),
    }
    md = Path(path).with_suffix(".md")
    md.write_text(
        "# Soak\n\n"
        f"{summary['minutes']} minutes at {rate} req/s (a fifth streamed) through two mock upstreams "
        f"with 10% faults ({faults}).\n\n"
        f"- RSS after {WARMUP_MIN} min warm-up: {min(rss):.1f}–{max(rss):.1f} MiB "
        f"(first {rss[0]:.1f}, last {rss[-1]:.1f}; growth {rss[-1]-rss[0]:+.1f} MiB)\n"
        f"- open file descriptors after warm-up: {min(fds)}–{max(fds)}\n"
        f"- traces: {summary['traces_recorded']} recorded, {summary['traces_written']} written, "
        f"{summary['traces_dropped']} dropped, {summary['traces_failed']} failed\n"
        + (f"- model-served share per minute: min {summary['model_served_share_per_minute']['min']:.3f}, "
           f"mean {summary['model_served_share_per_minute']['mean']:.3f}\n" if shares else "")
        + f"\nPlot: `{out_svg.name}`. Data: `{Path(path).name}`.\n\n```json\n{json.dumps(summary, indent=2)}\n```\n"
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
