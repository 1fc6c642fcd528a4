"""The latency plots' data: P50 per contender per length, one CSV row per length."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omniforge.components.base import BenchmarkCase


def pop_decode_table(
    report: dict[str, Any], x: str = "past_sequence_length"
) -> list[dict[str, Any]]:
    """Remove the per-variant decode rows an extra benchmark left in ``report``; return them
    as one row per cache length: per variant the P50 with IO binding and the memory-bandwidth
    floor, and PyTorch eager's best P50 (of 1 and ``threads`` threads)."""
    wide: dict[int, dict[str, Any]] = {}
    for figures in report.values():
        if not isinstance(figures, dict) or "decode_table" not in figures:
            continue
        for row in figures.pop("decode_table"):
            out = wide.setdefault(row[x], {x: row[x]})
            out[f"{row['variant']}_iobinding_p50_ms"] = round(row["p50_ms"], 4)
            out[f"{row['variant']}_floor_ms"] = round(row["floor_ms"], 4)
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
    """The latency plot's rows: P50 per contender per length, with the decode columns an
    extra benchmark left in ``report`` (removed from it: they are plot data, not metrics)."""
    decode_rows = pop_decode_table(report)
    return merge_rows(latency_table(report, cases, length_name), decode_rows, length_name)


def write_latency_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
