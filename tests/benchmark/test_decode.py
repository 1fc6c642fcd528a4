"""The decode benchmark of the tiny KV-cache talker: steps per cache length, prefill, floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniforge.benchmark.decode import DecodeBenchmark
from omniforge.params import BenchmarkParams, TalkerKVParams
from omniforge.sources.synthetic import SyntheticSource


def test_decode_benchmark_reports_decode_prefill_and_floor(
    kv_variants: dict[str, Path], tiny_source: SyntheticSource
) -> None:
    timing = BenchmarkParams(threads=1, warmup=1, iterations=3, lengths={"talker_kv": [4, 16]})
    settings = TalkerKVParams(
        bench_reference_past=16,
        bench_prefill_length=8,
        bench_generation_steps=4,
        bandwidth_mib=16,
    )
    report = DecodeBenchmark(tiny_source, timing, settings).run(kv_variants["int4"], "int4")
    assert set(report["decode"]) == {"past_4", "past_16"}
    assert report["decode_reference_past"] == 16
    for key in ("decode_p50_ms", "prefill_p50_ms", "torch_decode_p50_ms", "memory_read_gb_s"):
        assert report[key] > 0, key
    assert report["decode_real_time_factor"] == pytest.approx(report["decode_p50_ms"] / 1e3 * 50)
    assert report["decode_floor_multiple"] == pytest.approx(
        report["decode_p50_ms"] / report["decode_floor_ms"]
    )
    # int4 reads fewer weight bytes per step than the fp32 PyTorch module.
    assert report["weight_bytes_per_step"] < report["torch_weight_bytes_per_step"]
    rows = report["decode_table"]
    assert [r["past_sequence_length"] for r in rows] == [4, 16]
    assert {"p50_ms", "torch_p50_ms", "floor_ms", "variant"} <= set(rows[0])
