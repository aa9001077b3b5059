"""Small inline SVG charts for the HTML report: no script, no network, readable on a phone.

Each chart is one <svg> with a viewBox, so it scales to the page; labels are
escaped here, values are numbers.
"""
from __future__ import annotations

from html import escape

W, H, PAD_L, PAD_B, PAD_T = 640, 260, 48, 56, 24


def _frame(title: str, body: str, kind: str) -> str:
    return (f'<figure class="chart" data-chart="{escape(kind)}">'
            f'<figcaption>{escape(title)}</figcaption>'
            f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" '
            f'xmlns="http://www.w3.org/2000/svg">{body}</svg></figure>')


def _axes(top: float, unit: str) -> str:
    out = [f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" class="axis"/>',
           f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - 8}" y2="{H - PAD_B}" class="axis"/>']
    for i in range(5):
        v = top * i / 4
        y = H - PAD_B - (H - PAD_B - PAD_T) * i / 4
        label = f"{v:.0f}" if top >= 10 else f"{v:.1f}"
        out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
                   f'{label}{escape(unit)}</text>')
    return "".join(out)


def _top(values: list[float]) -> float:
    top = max(values, default=0.0)
    return top * 1.1 if top > 0 else 1.0


def line_chart(title: str, points: list[tuple[str, float]], unit: str = "") -> str:
    if not points:
        return _frame(title, f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data'
                             f'</text>', "line")
    top = _top([v for _k, v in points])
    step = (W - PAD_L - 16) / max(1, len(points) - 1)
    xy = [(PAD_L + 8 + i * step, H - PAD_B - (H - PAD_B - PAD_T) * v / top)
          for i, (_k, v) in enumerate(points)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" class="dot">'
                   f'<title>{escape(k)}: {v:g}{escape(unit)}</title></circle>'
                   for (x, y), (k, v) in zip(xy, points))
    every = max(1, len(points) // 6)
    labels = "".join(f'<text x="{x:.1f}" y="{H - PAD_B + 16}" class="tick" '
                     f'text-anchor="middle">{escape(k[5:] if len(k) == 10 else k)}</text>'
                     for i, ((x, _y), (k, _v)) in enumerate(zip(xy, points)) if i % every == 0)
    return _frame(title, _axes(top, unit) + f'<polyline points="{path}" class="line"/>'
                  + dots + labels, "line")


def bar_chart(title: str, bars: list[tuple[str, float]], unit: str = "") -> str:
    if not bars:
        return _frame(title, f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data'
                             f'</text>', "bar")
    top = _top([v for _k, v in bars])
    slot = min(90.0, (W - PAD_L - 16) / len(bars))
    out = []
    for i, (k, v) in enumerate(bars):
        h = (H - PAD_B - PAD_T) * v / top
        x = PAD_L + 8 + i * slot
        out.append(f'<rect x="{x:.1f}" y="{H - PAD_B - h:.1f}" width="{slot * 0.7:.1f}" '
                   f'height="{h:.1f}" class="bar"><title>{escape(k)}: {v:g}{escape(unit)}'
                   f'</title></rect><text x="{x + slot * 0.35:.1f}" y="{H - PAD_B - h - 4:.1f}"'
                   f' class="value" text-anchor="middle">{v:g}</text>'
                   f'<text x="{x + slot * 0.35:.1f}" y="{H - PAD_B + 16}" class="tick" '
                   f'text-anchor="middle">{escape(k[:14])}</text>')
    return _frame(title, _axes(top, unit) + "".join(out), "bar")
