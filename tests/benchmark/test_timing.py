import numpy as np
import pytest

from omniforge.benchmark.latency import codec_rates
from omniforge.benchmark.plots import latency_table
from omniforge.benchmark.timing import summarize, time_calls
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
