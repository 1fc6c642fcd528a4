import numpy as np
import pytest

from omniforge.benchmark.latency import codec_rates
from omniforge.benchmark.plots import latency_table, plot_rows
from omniforge.benchmark.timing import SideBySide, summarize, time_calls, time_side_by_side
from omniforge.components.base import BenchmarkCase
from omniforge.talker_io import CODES_PER_SECOND


def test_summarize_percentiles_in_milliseconds() -> None:
    figures = summarize([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert figures["p50_ms"] == pytest.approx(50.5)
    assert figures["p95_ms"] == pytest.approx(95.0)
    assert figures["max_ms"] == pytest.approx(100.0)


def test_time_calls_runs_warmup_and_iterations() -> None:
    calls = []
    figures = time_calls(lambda: calls.append(1), warmup=2, iterations=5)
    assert len(calls) == 7
    assert figures["max_ms"] >= figures["p50_ms"] >= 0


def test_side_by_side_alternates_short_blocks_each_after_an_untimed_call() -> None:
    order: list[str] = []
    timed = time_side_by_side({name: (lambda n=name: order.append(n)) for name in "ab"}, 1, 5)
    # 1 warm-up each, then 3 rounds of (1 untimed + 2 timed) calls of a, then of b.
    assert order == ["a", "b"] + (["a"] * 3 + ["b"] * 3) * 3
    assert [len(blocks) for blocks in timed.block_medians_s.values()] == [3, 3]
    assert set(timed.summary) == {"a", "b"}
    alone: list[int] = []
    time_side_by_side({"a": lambda: alone.append(1)}, 1, 4)
    assert len(alone) == 1 + 4  # alone, no block needs an untimed call


def test_a_speedup_pairs_blocks_so_drift_between_blocks_cancels() -> None:
    # The machine slowed 4x during the reference's second block and the graph's fourth: each
    # pair of neighbouring blocks says 2x, the two medians (8 ms vs 1 ms) would say 8x.
    timed = SideBySide(
        summary={},
        block_medians_s={"graph": [1, 1, 1, 4, 4], "reference": [2, 8, 8, 8, 8]},
    )
    assert timed.speedup("reference", over="graph") == pytest.approx(2.0)
    with pytest.raises(ValueError):
        SideBySide({}, {"graph": [1.0], "reference": [1.0, 2.0]}).speedup("reference", "graph")


def test_codec_rates() -> None:
    case = BenchmarkCase("sequence_length=100", 100, {})
    rates = codec_rates(case, p50_ms=500.0, batch=2)
    assert rates["positions_per_s"] == pytest.approx(400.0)
    # 100 codes are 2 s of audio; 0.5 s to produce them is a quarter of real time.
    assert rates["full_pass_real_time_factor"] == pytest.approx(0.5 / (100 / CODES_PER_SECOND))


def test_latency_table_has_one_column_per_contender() -> None:
    cases = [BenchmarkCase(f"n={n}", n, {"x": np.zeros(1)}) for n in (8, 16)]
    report = {
        "threads": 2,
        "torch": {"latency": {"n=8": {"p50_ms": 2.0}, "n=16": {"p50_ms": 4.0}}},
        "int8": {"latency": {"n=8": {"p50_ms": 1.0}, "n=16": {"p50_ms": 1.5}}},
    }
    rows = latency_table(report, cases, "sequence_length")
    assert rows == [
        {"sequence_length": 8, "torch_p50_ms": 2.0, "int8_p50_ms": 1.0},
        {"sequence_length": 16, "torch_p50_ms": 4.0, "int8_p50_ms": 1.5},
    ]


def test_kept_decode_figures_plot_as_new_ones() -> None:
    """A KV talker's plot reads each variant's decode figures, so a variant whose figures are
    kept from the last report (JSON round trip) plots the same series as when timed."""
    import json

    cases = [BenchmarkCase("past=4", 4, {"x": np.zeros(1)})]
    decode = {"past_4": {"p50_ms": 1.25, "floor_ms": 0.5, "torch_best_p50_ms": 3.0}}
    report = {
        "torch": {"latency": {"past=4": {"p50_ms": 2.0}}},
        "int8": {"latency": {"past=4": {"p50_ms": 1.0}}, "decode": decode},
    }
    timed = plot_rows(report, cases, "past_sequence_length")
    kept = plot_rows(json.loads(json.dumps(report)), cases, "past_sequence_length")
    assert (
        timed
        == kept
        == [
            {
                "past_sequence_length": 4,
                "torch_p50_ms": 2.0,
                "int8_p50_ms": 1.0,
                "int8_iobinding_p50_ms": 1.25,
                "int8_floor_ms": 0.5,
                "torch_best_p50_ms": 3.0,
            }
        ]
    )
