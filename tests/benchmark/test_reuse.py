"""Figures of unchanged variants are kept; a changed variant and PyTorch are timed again."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from omniforge.benchmark import run as benchmark_run
from omniforge.benchmark.reuse import FINGERPRINT, fingerprint, previous_report
from omniforge.errors import ArtifactError
from omniforge.params import Params, parse_params


@pytest.fixture(scope="module")
def params() -> Params:
    lengths = {"talker": [8], "talker_kv": [4], "talker_fused": [4], "projection": [8, 16]}
    return parse_params(
        {
            "components": list(lengths),
            "model": {"preset": "tiny"},
            "benchmark": {
                "threads": 1,
                "warmup": 1,
                "iterations": 2,
                "load_repeats": 1,
                "lengths": lengths,
            },
        }
    )


@pytest.fixture(scope="module")
def first(tiny_variants: dict, params: Params) -> dict[str, Any]:
    root = tiny_variants["projection"]["fp32"].parents[1]
    return benchmark_run.benchmark_component(params, "projection", root)


def timed_again(
    monkeypatch: pytest.MonkeyPatch, tiny_variants: dict, params: Params, previous: dict
) -> tuple[dict[str, Any], list[str]]:
    """A second run of the stage's logic, and the names of the children it started."""
    started: list[str] = []
    real = benchmark_run.run_in_child

    def counting(what: str, *args: Any) -> Any:
        started.append(what)
        return real(what, *args)

    monkeypatch.setattr(benchmark_run, "run_in_child", counting)
    root = tiny_variants["projection"]["fp32"].parents[1]
    return benchmark_run.benchmark_component(params, "projection", root, previous), started


def test_a_run_with_nothing_changed_times_nothing(
    monkeypatch: pytest.MonkeyPatch, tiny_variants: dict, params: Params, first: dict
) -> None:
    report, started = timed_again(monkeypatch, tiny_variants, params, first)
    assert started == []
    for variant in ("torch", "fp32", "int8", "int4", "int4-exact"):
        assert report[variant] == first[variant]


def test_a_changed_variant_is_timed_again_beside_pytorch(
    monkeypatch: pytest.MonkeyPatch, tiny_variants: dict, params: Params, first: dict
) -> None:
    previous = copy.deepcopy(first)
    previous["int4"][FINGERPRINT] = "measured on other bytes"
    report, started = timed_again(monkeypatch, tiny_variants, params, previous)
    assert started == ["benchmark of projection (torch)", "benchmark of projection-int4"]
    assert report["int8"] == first["int8"]
    assert report["int4"][FINGERPRINT] == first["int4"][FINGERPRINT]
    assert report["int4"]["measured_at"] >= first["int4"]["measured_at"]


def test_the_key_covers_bytes_baseline_and_context() -> None:
    files = [{"name": "model.onnx", "sha256": "a" * 64, "bytes": 1}]
    context = {"machine": {"cpu": "AMD EPYC"}, "params": {}}
    key = fingerprint(context, "int4", files, None)
    assert key == fingerprint(context, "int4", [dict(f) for f in files], None)
    assert key != fingerprint(context, "int4", [{**files[0], "sha256": "b" * 64}], None)
    assert key != fingerprint(context, "int4", files, files)
    assert key != fingerprint({**context, "machine": {"cpu": "Xeon"}}, "int4", files, None)


def test_a_missing_or_unreadable_report_keeps_nothing(tmp_path: Path) -> None:
    assert previous_report(tmp_path / "none.json") == {}
    (tmp_path / "torn.json").write_text('{"fp32": ')
    assert previous_report(tmp_path / "torn.json") == {}
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ArtifactError, match="expected a JSON object"):
        previous_report(tmp_path / "list.json")
