"""The benchmark stage's logic: every variant and PyTorch eager on the same shapes, in one run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omniforge.artifacts import artifact_bytes, artifact_files, records_as_dicts, variant_dir
from omniforge.benchmark.children import run_in_child
from omniforge.benchmark.decode import bench_decode
from omniforge.benchmark.latency import bench_onnx, bench_torch, codec_rates
from omniforge.benchmark.plots import plot_rows
from omniforge.benchmark.timing import TimingPlan
from omniforge.components import get_component
from omniforge.params import Params

log = logging.getLogger(__name__)

# Graph kinds whose variants get a benchmark beyond per-shape latency, in a child of its own.
EXTRA_BENCHMARKS = {"kv-cache": bench_decode}


def benchmark_component(
    params: Params, name: str, variants_root: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Size, load time, latency and peak RSS of every variant beside PyTorch eager.

    Returns the metrics report and the latency plot's rows.
    """
    from omniforge.sources import open_source

    settings = params.benchmark
    component = get_component(name)
    configs = open_source(params.model).configs
    cases = component.benchmark_cases(
        configs, settings.batch, settings.lengths[name], seed=params.validate_.seed
    )
    plan = TimingPlan(settings.threads, settings.warmup, settings.iterations, settings.load_repeats)
    plain_cases = [(case.label, case.inputs) for case in cases]
    largest = max(cases, key=lambda case: case.length).label
    extra = EXTRA_BENCHMARKS.get(component.graph_kind)
    report: dict[str, Any] = {
        "threads": plan.threads,
        "iterations": plan.iterations,
        "batch": settings.batch,
    }
    torch_latency: dict[str, dict[str, float]] = {}
    if settings.compare_torch:
        log.info("%s: timing PyTorch eager", name)
        report["torch"] = run_in_child(
            f"{name} (torch)", bench_torch, name, params.model.model_dump(), cases, plan
        )
        torch_latency = report["torch"]["latency"]
    for variant in params.variants:
        directory = variant_dir(variants_root, name, variant)
        what = f"{name}-{variant}"
        log.info("%s: timing %s", name, variant)
        figures = run_in_child(what, bench_onnx, str(directory), plain_cases, plan)
        figures["size"] = artifact_bytes(directory)
        # Custody: publish checks that these are the bytes validate checked.
        figures["files"] = records_as_dicts(artifact_files(directory))
        # What the latency budget gate reads: JSON keys are sorted, so name it explicitly.
        figures["largest_case"] = largest
        figures["largest_case_p50_ms"] = figures["latency"][largest]["p50_ms"]
        if torch_latency:
            figures["speedup_vs_torch"] = {
                label: torch_latency[label]["p50_ms"] / timing["p50_ms"]
                for label, timing in figures["latency"].items()
            }
        if component.emits_codes:
            figures["rates"] = {
                case.label: codec_rates(
                    case, figures["latency"][case.label]["p50_ms"], settings.batch
                )
                for case in cases
            }
        if extra is not None:
            figures.update(run_in_child(what, extra, params.as_dict(), str(directory), variant))
        report[variant] = figures
    return report, plot_rows(report, cases, component.length_name)
