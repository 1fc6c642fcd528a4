"""The latency plots: P50 per contender per length, as data rows and as an image.

Images, not vega specs: `dvc plots show` embeds them as they are, so the page renders
offline, and each one carries its own title, axis units and a colour per series.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniforge.components.base import BenchmarkCase

DECODE_SUFFIX, FLOOR_SUFFIX, P50_SUFFIX = "_iobinding_p50_ms", "_floor_ms", "_p50_ms"
DECODE_X = "past_sequence_length"


def decode_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per cache length of the variants' decode figures (``decode``: ``past_<n>``
    rows, new or kept from the last run alike): per variant the P50 with IO binding and the
    memory-bandwidth floor, and PyTorch eager's best P50 (of 1 and ``threads`` threads)."""
    wide: dict[int, dict[str, Any]] = {}
    for variant, figures in report.items():
        if not isinstance(figures, dict) or not isinstance(figures.get("decode"), dict):
            continue
        for key, row in figures["decode"].items():
            past = int(key.removeprefix("past_"))
            out = wide.setdefault(past, {DECODE_X: past})
            out[f"{variant}{DECODE_SUFFIX}"] = round(row["p50_ms"], 4)
            out[f"{variant}{FLOOR_SUFFIX}"] = round(row["floor_ms"], 4)
            if "torch_best_p50_ms" in row:
                out["torch_best_p50_ms"] = round(row["torch_best_p50_ms"], 4)
    return [wide[key] for key in sorted(wide)]


def latency_table(
    report: dict[str, Any], cases: list[BenchmarkCase], length_name: str
) -> list[dict[str, Any]]:
    """Rows of P50 latency per length, one column per contender: the latency plot's data."""
    contenders = [k for k, v in report.items() if isinstance(v, dict) and "latency" in v]
    return [
        {length_name: case.length}
        | {
            f"{name}_p50_ms": round(report[name]["latency"][case.label]["p50_ms"], 4)
            for name in contenders
        }
        for case in cases
    ]


def merge_rows(
    rows: list[dict[str, Any]], extra: list[dict[str, Any]], key: str
) -> list[dict[str, Any]]:
    """``rows`` with the columns of the ``extra`` row of the same ``key`` value added."""
    by_key = {row[key]: row for row in extra}
    return [row | by_key.get(row[key], {}) for row in rows]


def plot_rows(
    report: dict[str, Any], cases: list[BenchmarkCase], length_name: str
) -> list[dict[str, Any]]:
    """The latency plot's rows: P50 per contender per length, with a KV talker's decode
    columns (:func:`decode_table`)."""
    return merge_rows(latency_table(report, cases, length_name), decode_table(report), length_name)


# What each component's benchmark lengths are, for the x axis.
X_LABELS = {
    "past_sequence_length": "cache length before the step (positions)",
    "sequence_length": "sequence length (positions)",
    "frames": "audio-encoder frames",
    "chunk": "stream chunk, in order (transformers' default setting)",
}


def plot_series(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Column -> legend label: decode steps with IO binding when there are any (a KV talker),
    else per-shape P50; PyTorch eager; and the lowest bandwidth floor."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    decode = [c for c in columns if c.endswith(DECODE_SUFFIX)]
    if decode:
        series = {c: c.removesuffix(DECODE_SUFFIX) for c in decode}
        torch = "torch_best_p50_ms"
    else:
        series = {
            c: c.removesuffix(P50_SUFFIX)
            for c in columns
            if c.endswith(P50_SUFFIX) and not c.startswith("torch")
        }
        torch = "torch_p50_ms"
    if torch in columns:
        series[torch] = "PyTorch eager"
    floors = [c for c in columns if c.endswith(FLOOR_SUFFIX)]
    if floors:
        lowest = min(floors, key=lambda c: min(r.get(c, float("inf")) for r in rows))
        series[lowest] = f"bandwidth floor ({lowest.removesuffix(FLOOR_SUFFIX)})"
    return series


def render_latency_png(path: Path, report: dict[str, Any], title: str) -> None:
    """A benchmark report's plot rows as a log-log line plot with titled axes (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import ticker

    rows, x = report["plot"], report["plot_x"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    colours = plt.get_cmap("tab10")
    markers = "osD^v<>ph*"
    for index, (column, label) in enumerate(plot_series(rows).items()):
        points = [(row[x], row[column]) for row in rows if column in row]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        floor = column.endswith(FLOOR_SUFFIX)
        axes.plot(
            xs,
            ys,
            label=label,
            color="grey" if floor else colours(index % 10),
            linestyle="--" if floor else "-",
            marker=None if floor else markers[index % len(markers)],
        )
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    # Plain numbers on the axes (8, 16, 1024; 2.5 ms), not powers.
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xlabel(X_LABELS.get(x, x))
    decode = any(key.endswith(DECODE_SUFFIX) for row in rows for key in row)
    axes.set_ylabel("decode step P50 (ms)" if decode else "latency P50 (ms)")
    axes.set_title(f"{title} (batch {report['batch']}, {report['threads']} threads)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    figure.savefig(tmp, metadata={"Software": None})
    plt.close(figure)
    tmp.replace(path)
