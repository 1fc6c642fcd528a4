"""The decode benchmark of the tiny KV talkers: steps, prefill, first code, baseline, torch.

Each timing runs in a child, as the stage runs it: the child's sessions share one thread pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniforge.artifacts import artifact_files, variant_dir
from omniforge.benchmark.compute import weight_multiply_adds
from omniforge.benchmark.decode import (
    bench_decode_onnx,
    bench_decode_torch,
    with_torch,
)
from omniforge.benchmark.plots import decode_table
from omniforge.benchmark.run import beside_dirs, variant_files
from omniforge.children import run_in_child
from omniforge.components import get_component
from omniforge.params import Params, parse_params


@pytest.fixture(scope="module")
def params() -> Params:
    lengths = {"talker": [8], "talker_kv": [4, 16], "talker_fused": [4, 16], "projection": [8]}
    return parse_params(
        {
            "components": list(lengths),
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
    report = run_in_child(
        "int4", bench_decode_onnx, params.as_dict(), "talker_kv", str(kv_variants["int4"]), "int4"
    )
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
    # The prompt against its compute floor: every weight times every row, at the int8 rate.
    per_row = weight_multiply_adds(kv_variants["int4"] / "model.onnx")
    rows = params.benchmark.batch * params.talker_kv.bench_prefill_length
    assert report["prefill_multiply_adds"] == per_row * rows
    assert report["prefill_floor_ms"] == pytest.approx(
        report["prefill_multiply_adds"] / (report["int8_gemm_gmac_per_s"] * 1e9) * 1e3
    )
    assert report["prefill_floor_multiple"] == pytest.approx(
        report["prefill_p50_ms"] / report["prefill_floor_ms"]
    )
    # int4 reads fewer weight bytes per step than the fp32 PyTorch module.
    assert report["weight_bytes_per_step"] < report["torch_weight_bytes_per_step"]
    rows = decode_table({"int4": report})
    assert [r["past_sequence_length"] for r in rows] == [4, 16]
    assert set(rows[0]) == {
        "past_sequence_length",
        "int4_iobinding_p50_ms",
        "int4_floor_ms",
        "torch_best_p50_ms",
    }
    assert "decode_speedup_vs_baseline" not in report
    assert "decode_speedup_vs_reference" not in report


def test_a_fused_graph_is_timed_beside_its_baseline_and_the_reference(
    tiny_variants: dict, params: Params
) -> None:
    fused, plain = tiny_variants["talker_fused"]["int4-block128"], tiny_variants["talker_kv"]
    report = run_in_child(
        "fused",
        bench_decode_onnx,
        params.as_dict(),
        "talker_fused",
        str(fused),
        "int4-block128",
        {"baseline": str(plain["int4-block128"]), "reference": str(plain["int4"])},
    )
    row = report["decode"]["past_16"]
    for name in ("baseline", "reference"):
        assert row[f"speedup_vs_{name}"] > 0 and row[f"{name}_p50_ms"] > 0
        assert report[f"decode_speedup_vs_{name}"] == row[f"speedup_vs_{name}"]
        assert report[f"{name}_decode_p50_ms"] == row[f"{name}_p50_ms"]
        assert report[f"prefill_speedup_vs_{name}"] > 0


def test_a_variant_is_timed_beside_its_plain_graph_and_the_reference_once(
    params: Params, tmp_path: Path, tiny_variants: dict
) -> None:
    fused, plain = get_component("talker_fused"), get_component("talker_kv")
    kv = params.talker_kv
    assert kv.speedup_reference == "int4" and kv.hybrid_decode != "int4"

    def graph(variant: str) -> Path:
        return variant_dir(tmp_path, "talker_kv", variant)

    assert beside_dirs(params, fused, tmp_path, "int8") == {
        "baseline": graph("int8"),
        "reference": graph("int4"),
    }
    assert beside_dirs(params, fused, tmp_path, "int4") == {"baseline": graph("int4")}
    assert beside_dirs(params, fused, tmp_path, "hybrid") == {
        "baseline": graph(kv.hybrid_decode),
        "reference": graph("int4"),
    }
    # The figures are keyed by the bytes of every graph beside, each under its role.
    root = tiny_variants["talker_fused"]["fp32"].parents[1]
    _, beside = variant_files(params, fused, root, "int8")
    names = {record["name"] for record in beside}
    assert {"baseline/model.onnx", "reference/model.onnx"} <= names
    reference = {r.name: r.sha256 for r in artifact_files(root / "talker_kv" / "int4")}
    sha256 = {r["name"]: r["sha256"] for r in beside}
    assert sha256["reference/model.onnx"] == reference["model.onnx"]
    # Two full-size fp32 talkers do not fit in memory; a plain graph has no baseline.
    assert beside_dirs(params, fused, tmp_path, "fp32") == {}
    assert beside_dirs(params, plain, tmp_path, "int8") == {}


def test_a_hybrid_pair_prefills_with_one_graph_and_decodes_with_the_other(
    tiny_variants: dict, params: Params
) -> None:
    variants = tiny_variants["talker_fused"]
    report = run_in_child(
        "fused",
        bench_decode_onnx,
        params.as_dict(),
        "talker_fused",
        str(variants["int4"]),
        "hybrid",
        None,
        str(variants["int8"]),
    )
    assert report["prefill_p50_ms"] > 0 and report["decode_p50_ms"] > 0
