"""Plots results/trajectory.csv as an SVG line chart of x and v over t (standard library only)."""

import csv

WIDTH, HEIGHT, MARGIN = 640, 320, 40


def _polyline(points, colour):
    coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coordinates}"/>'


def write_plot(source, target):
    with source.open() as handle:
        rows = [(float(r["t"]), float(r["x"]), float(r["v"])) for r in csv.DictReader(handle)]
    if len(rows) < 2:
        return
    step = max(1, len(rows) // 1000)  # at most ~1000 points per line
    rows = rows[::step]
    t0, t1 = rows[0][0], rows[-1][0]
    low = min(min(x, v) for _, x, v in rows)
    high = max(max(x, v) for _, x, v in rows)
    span_t, span_y = (t1 - t0) or 1.0, (high - low) or 1.0

    def place(t, y):
        return (
            MARGIN + (t - t0) / span_t * (WIDTH - 2 * MARGIN),
            HEIGHT - MARGIN - (y - low) / span_y * (HEIGHT - 2 * MARGIN),
        )

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#888"/>',
        f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#888"/>',
        _polyline([place(t, x) for t, x, _ in rows], "#0b5a8a"),
        _polyline([place(t, v) for t, _, v in rows], "#c2410c"),
        f'<text x="{MARGIN}" y="{MARGIN - 12}">x (m, blue) and v (m/s, orange) over t = {t0:g}…{t1:g} s</text>',
        "</svg>",
    ]
    target.write_text("\n".join(parts) + "\n")
