"""The decode benchmark of the tiny KV talkers: steps, prefill, first code, baseline, torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniforge.benchmark.decode import (
    bench_decode_onnx,
    bench_decode_torch,
    interleaved,
    with_torch,
)
from omniforge.params import Params, parse_params


@pytest.fixture(scope="module")
def params() -> Params:
    lengths = {"talker": [8], "talker_kv": [4, 16], "talker_fused": [4, 16], "projection": [8]}
    return parse_params(
        {
            "benchmark": {"threads": 1, "warmup": 1, "iterations": 4, "lengths": lengths},
            "talker_kv": {
                "bench_reference_past": 16,
                "bench_prefill_length": 8,
                "bench_generation_steps": 4,
                "bandwidth_mib": 16,
            },
        }
    )


def test_decode_benchmark_of_a_plain_graph_with_torch(
    kv_variants: dict[str, Path], params: Params
) -> None:
    report = bench_decode_onnx(params.as_dict(), "talker_kv", str(kv_variants["int4"]), "int4")
    eager = bench_decode_torch(params.as_dict(), "talker_kv")
    report = with_torch(report, eager)
    assert set(report["decode"]) == {"past_4", "past_16"}
    assert report["decode_reference_past"] == 16
    for key in ("decode_p50_ms", "prefill_p50_ms", "torch_decode_p50_ms", "memory_read_gb_s"):
        assert report[key] > 0, key
    assert report["time_to_first_code_ms"] > 0 and report["utterance_s"] > 0
    assert report["decode_real_time_factor"] == pytest.approx(report["decode_p50_ms"] / 1e3 * 50)
    assert report["decode_floor_multiple"] == pytest.approx(
        report["decode_p50_ms"] / report["decode_floor_ms"]
    )
    # int4 reads fewer weight bytes per step than the fp32 PyTorch module.
    assert report["weight_bytes_per_step"] < report["torch_weight_bytes_per_step"]
    rows = report["decode_table"]
    assert [r["past_sequence_length"] for r in rows] == [4, 16]
    assert {"p50_ms", "torch_best_p50_ms", "floor_ms", "variant"} <= set(rows[0])
    assert "decode_speedup_vs_baseline" not in report


def test_a_fused_graph_is_timed_beside_its_baseline(tiny_variants: dict, params: Params) -> None:
    fused, plain = tiny_variants["talker_fused"]["int4"], tiny_variants["talker_kv"]["int4"]
    report = bench_decode_onnx(params.as_dict(), "talker_fused", str(fused), "int4", str(plain))
    row = report["decode"]["past_16"]
    assert row["speedup_vs_baseline"] == pytest.approx(row["baseline_p50_ms"] / row["p50_ms"])
    assert report["decode_speedup_vs_baseline"] == row["speedup_vs_baseline"]
    assert report["prefill_speedup_vs_baseline"] > 0


def test_a_hybrid_pair_prefills_with_one_graph_and_decodes_with_the_other(
    tiny_variants: dict, params: Params
) -> None:
    variants = tiny_variants["talker_fused"]
    report = bench_decode_onnx(
        params.as_dict(),
        "talker_fused",
        str(variants["int4"]),
        "hybrid",
        None,
        str(variants["int8"]),
    )
    assert report["prefill_p50_ms"] > 0 and report["decode_p50_ms"] > 0


def test_interleaved_blocks_time_every_call() -> None:
    calls = {"a": [], "b": []}
    timed = interleaved({name: (lambda name=name: calls[name].append(1)) for name in calls}, 1, 6)
    assert set(timed) == {"a", "b"}
    assert len(calls["a"]) == len(calls["b"]) == 2 * (1 + 3)  # 2 blocks of warm-up + 3
