"""Inline SVG charts: no library, no network, every label escaped.

Each chart is a small function from plain figures to an SVG string, so the HTML report
needs nothing but itself to show pictures.
"""

from __future__ import annotations

from html import escape

PALETTE = ("#3b6ea8", "#d9822b", "#4a9b5f", "#b5485d", "#7b5ea7", "#8c8c3a")


def _legend_x(left: int, labels: list[str]) -> list[int]:
    """Where each legend entry starts: after the one before, by its label's length (about 7
    px a character at the charts' 11-12 px font), so long labels do not overlap."""
    xs, x = [], left
    for label in labels:
        xs.append(x)
        x += 24 + 7 * len(label)
    return xs


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def interval_bars(title: str, unit: str, rows: list[tuple[str, float | None, float | None, float | None]],
                  *, width: int = 560, higher_is_better: bool = True) -> str:
    """Horizontal bars (median) with 95% interval whiskers, one row per model."""
    shown = [(label, median, low, high) for label, median, low, high in rows
             if median is not None]
    if not shown:
        return ""
    bar_h, gap, left, right, top = 22, 10, 150, 80, 28
    height = top + len(shown) * (bar_h + gap) + 24
    vmax = max(max(r[1], r[3] or r[1]) for r in shown) or 1.0
    scale = (width - left - right) / vmax
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg" data-chart="interval-bars">',
             f'<title>{escape(title)}</title>',
             f'<text x="0" y="16" class="chart-title">{escape(title)} ({escape(unit)}, '
             f'{"higher" if higher_is_better else "lower"} is better)</text>']
    for i, (label, median, low, high) in enumerate(shown):
        y = top + i * (bar_h + gap)
        w = max(median * scale, 1)
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">'
                     f'{escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}" '
                     f'data-value="{median:.6g}"><title>{escape(label)}: {_num(median)} '
                     f'{escape(unit)}</title></rect>')
        if low is not None and high is not None:
            x1, x2, ym = left + low * scale, left + high * scale, y + bar_h / 2
            parts.append(f'<g class="whisker" stroke="#222" stroke-width="1.5">'
                         f'<line x1="{x1:.1f}" y1="{ym}" x2="{x2:.1f}" y2="{ym}"/>'
                         f'<line x1="{x1:.1f}" y1="{y + 4}" x2="{x1:.1f}" y2="{y + bar_h - 4}"/>'
                         f'<line x1="{x2:.1f}" y1="{y + 4}" x2="{x2:.1f}" y2="{y + bar_h - 4}"/></g>')
        parts.append(f'<text x="{left + max(w, (high or 0) * scale) + 6:.1f}" '
                     f'y="{y + bar_h * 0.7:.1f}">{_num(median)}</text>')
    parts.append(f'<text x="{left}" y="{height - 6}" class="axis">0</text>'
                 f'<text x="{width - right}" y="{height - 6}" class="axis" text-anchor="end">'
                 f'{_num(vmax)}</text></svg>')
    return "".join(parts)


def grouped_bars(title: str, unit: str, groups: list[str], series: list[str],
                 values: dict[tuple[str, str], float | None], *, width: int = 680) -> str:
    """Vertical bars: one group per prompt, one bar per model."""
    present = [(g, s, values.get((g, s))) for g in groups for s in series]
    if not any(v is not None for _, _, v in present):
        return ""
    left, bottom, top = 50, 70, 30
    height = 280
    vmax = max(v for _, _, v in present if v is not None) or 1.0
    plot_h = height - top - bottom
    group_w = (width - left - 10) / max(len(groups), 1)
    bar_w = min(28, (group_w - 10) / max(len(series), 1))
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg" data-chart="grouped-bars">',
             f'<title>{escape(title)}</title>',
             f'<text x="0" y="16" class="chart-title">{escape(title)} ({escape(unit)})</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" stroke="#999"/>',
             f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" class="axis">{_num(vmax)}</text>']
    for gi, group in enumerate(groups):
        gx = left + gi * group_w + 5
        for si, name in enumerate(series):
            v = values.get((group, name))
            if v is None:
                continue
            h = v / vmax * plot_h
            x = gx + si * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{h:.1f}" fill="{PALETTE[si % len(PALETTE)]}" data-value="{v:.6g}">'
                         f'<title>{escape(name)} · {escape(group)}: {_num(v)} {escape(unit)}</title></rect>')
        parts.append(f'<text x="{gx + len(series) * bar_w / 2:.1f}" y="{top + plot_h + 14}" '
                     f'text-anchor="end" transform="rotate(-30 {gx + len(series) * bar_w / 2:.1f} '
                     f'{top + plot_h + 14})" class="axis">{escape(group)}</text>')
    for si, name in enumerate(series):
        parts.append(f'<rect x="{left + si * 140}" y="{height - 16}" width="10" height="10" '
                     f'fill="{PALETTE[si % len(PALETTE)]}"/><text x="{left + si * 140 + 14}" '
                     f'y="{height - 7}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar(title: str, rows: list[tuple[str, list[tuple[str, float]]]], budget: float | None,
                *, unit: str = "GiB", width: int = 640) -> str:
    """One stacked bar per model (e.g. weights, KV, compute) against an optional budget line."""
    if not rows:
        return ""
    left, right, bar_h, gap, top = 150, 40, 24, 14, 28
    names = list(dict.fromkeys(part for _, parts in rows for part, _ in parts))
    height = top + len(rows) * (bar_h + gap) + 34
    vmax = max([sum(v for _, v in parts) for _, parts in rows] + [budget or 0]) or 1.0
    scale = (width - left - right) / vmax
    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" xmlns="http://www.w3.org/2000/svg" data-chart="stacked-bar">',
           f'<title>{escape(title)}</title>',
           f'<text x="0" y="16" class="chart-title">{escape(title)} ({escape(unit)})</text>']
    for i, (label, parts) in enumerate(rows):
        y = top + i * (bar_h + gap)
        x: float = left
        out.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{escape(label)}</text>')
        for part, v in parts:
            w = v * scale
            color = PALETTE[names.index(part) % len(PALETTE)]
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0):.1f}" height="{bar_h}" '
                       f'fill="{color}" data-value="{v:.6g}"><title>{escape(label)} · '
                       f'{escape(part)}: {_num(v)} {escape(unit)}</title></rect>')
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + bar_h * 0.7:.1f}">{_num(sum(v for _, v in parts))}</text>')
    if budget:
        bx = left + budget * scale
        out.append(f'<line x1="{bx:.1f}" y1="{top - 6}" x2="{bx:.1f}" y2="{height - 28}" '
                   f'stroke="#c00" stroke-dasharray="4 3"/><text x="{bx:.1f}" y="{top - 8}" '
                   f'text-anchor="middle" fill="#c00">budget {_num(budget)}</text>')
    for i, part in enumerate(names):
        out.append(f'<rect x="{left + i * 120}" y="{height - 16}" width="10" height="10" '
                   f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{left + i * 120 + 14}" '
                   f'y="{height - 7}">{escape(part)}</text>')
    out.append("</svg>")
    return "".join(out)


def timeline(title: str, unit: str, series: list[tuple[str, list[tuple[float, float]]]], *,
             ymax: float | None = None, threshold: tuple[float, str] | None = None,
             span: tuple[float, float] | None = None, span_label: str = "",
             x_unit: str = "s", width: int = 680) -> str:
    """Lines over time (x: seconds from the start), one per series, with an optional dashed
    threshold line and a shaded span (e.g. while the speed was measured)."""
    shown = [(label, pts) for label, pts in series if pts]
    if not shown:
        return ""
    left, right, top, bottom, height = 50, 12, 30, 44, 240
    legend = _legend_x(left, [label for label, _ in shown] + [span_label])
    plot_w, plot_h = width - left - right, height - top - bottom
    xmax = max(x for _, pts in shown for x, _ in pts) or 1.0
    top_value = max([y for _, pts in shown for _, y in pts] + [ymax or 0.0,
                                                               threshold[0] if threshold else 0.0])
    top_value = top_value or 1.0

    def px(x: float) -> float:
        return left + x / xmax * plot_w

    def py(y: float) -> float:
        return top + plot_h - min(y, top_value) / top_value * plot_h

    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" xmlns="http://www.w3.org/2000/svg" data-chart="timeline">',
           f'<title>{escape(title)}</title>',
           f'<text x="0" y="16" class="chart-title">{escape(title)} ({escape(unit)})</text>']
    if span is not None:
        x0, x1 = px(max(span[0], 0.0)), px(min(span[1], xmax))
        out.append(f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1):.1f}" '
                   f'height="{plot_h}" fill="#eef3fa" data-span="{span[0]:.6g}-{span[1]:.6g}">'
                   f'<title>{escape(span_label)}</title></rect>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" '
               f'y2="{top + plot_h}" stroke="#999"/>'
               f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>'
               f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" class="axis">'
               f'{_num(top_value)}</text>'
               f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="axis">0</text>'
               f'<text x="{width - right}" y="{top + plot_h + 14}" text-anchor="end" '
               f'class="axis">{_num(xmax)} {escape(x_unit)}</text>')
    if threshold is not None:
        ty = py(threshold[0])
        out.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{width - right}" y2="{ty:.1f}" '
                   f'stroke="#c00" stroke-dasharray="4 3" data-threshold="{threshold[0]:.6g}"/>'
                   f'<text x="{width - right}" y="{ty - 4:.1f}" text-anchor="end" fill="#c00">'
                   f'{escape(threshold[1])} {_num(threshold[0])}</text>')
    for i, (label, pts) in enumerate(shown):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" '
                   f'points="{points}" data-series="{escape(label)}" '
                   f'data-max="{max(y for _, y in pts):.6g}"><title>{escape(label)}</title>'
                   f'</polyline>')
        lx = legend[i]
        out.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" '
                   f'fill="{color}"/><text x="{lx + 14}" y="{height - 7}">'
                   f'{escape(label)}</text>')
    if span is not None and span_label:
        x = legend[len(shown)]
        out.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="#eef3fa" '
                   f'stroke="#999"/><text x="{x + 14}" y="{height - 7}">'
                   f'{escape(span_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def xy_curves(title: str, x_label: str, y_label: str,
              series: list[tuple[str, list[tuple[float, float, str]]]], *,
              width: int = 680) -> str:
    """Lines through labelled points (e.g. a throughput–latency curve: x = output tokens/s,
    y = p99 TTFT, each point labelled with its concurrency), one line per series, in the
    order given."""
    shown = [(label, pts) for label, pts in series if pts]
    if not shown:
        return ""
    left, right, top, bottom = 60, 20, 30, 60
    legend = _legend_x(left, [label for label, _ in shown])
    height = 300
    plot_w, plot_h = width - left - right, height - top - bottom
    xmax = max(x for _, pts in shown for x, _, _ in pts) or 1.0
    ymax = max(y for _, pts in shown for _, y, _ in pts) or 1.0

    def px(x: float) -> float:
        return left + x / xmax * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / ymax * plot_h

    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" xmlns="http://www.w3.org/2000/svg" data-chart="xy-curves">',
           f'<title>{escape(title)}</title>',
           f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
           f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
           f'stroke="#999"/><line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" '
           f'stroke="#999"/>',
           f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" class="axis">{_num(ymax)}</text>',
           f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="axis">0</text>',
           f'<text x="{width - right}" y="{top + plot_h + 14}" text-anchor="end" class="axis">'
           f'{_num(xmax)}</text>',
           f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 30}" text-anchor="middle" '
           f'class="axis">{escape(x_label)}</text>',
           f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" class="axis" '
           f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{escape(y_label)}</text>']
    for i, (label, pts) in enumerate(shown):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in pts)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" '
                   f'points="{points}" data-series="{escape(label)}"><title>{escape(label)}'
                   f'</title></polyline>')
        for x, y, name in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}" '
                       f'data-x="{x:.6g}" data-y="{y:.6g}"><title>{escape(label)} · '
                       f'{escape(name)}: {_num(x)} {escape(x_label)}, {_num(y)} '
                       f'{escape(y_label)}</title></circle>'
                       # near the right edge the label goes to the point's left
                       + (f'<text x="{px(x) - 5:.1f}" y="{py(y) - 5:.1f}" class="axis" '
                          f'text-anchor="end">' if px(x) > width - right - 60 else
                          f'<text x="{px(x) + 5:.1f}" y="{py(y) - 5:.1f}" class="axis">')
                       + f'{escape(name)}</text>')
        lx = legend[i]
        out.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" '
                   f'fill="{color}"/><text x="{lx + 14}" y="{height - 7}">'
                   f'{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
