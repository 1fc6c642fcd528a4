"""The benchmark stage's logic: every variant and PyTorch eager on the same shapes, in one run.

Per component: PyTorch eager once (a child of its own), then per variant a child timing the
graph per shape (size, load time, latency, peak RSS) and, for a KV-cache talker, a child
timing decode steps, prefill, the first code and an utterance (:mod:`.decode`), beside the
component's baseline graph and the reference graph when it has them. A variant of several
graphs is timed as the pipeline runs it: a KV talker's hybrid pair with its prefill graph
for the prompt and its decode graph per code; Token2Wav as whole syntheses
(:mod:`.synthesis`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omniforge.artifacts import (
    DECODE,
    MODEL,
    PREFILL,
    artifact_bytes,
    artifact_files,
    graph_files,
    graphs_bytes,
    records_as_dicts,
    variant_dir,
)
from omniforge.benchmark.decode import (
    BASELINE,
    REFERENCE,
    bench_decode_onnx,
    bench_decode_torch,
    with_torch,
)
from omniforge.benchmark.latency import bench_onnx, bench_torch, codec_rates
from omniforge.benchmark.plots import plot_rows
from omniforge.benchmark.reuse import (
    FINGERPRINT,
    MEASURED_AT,
    MEASURED_ON,
    context,
    fingerprint,
    kept,
)
from omniforge.benchmark.timing import TimingPlan
from omniforge.children import run_in_child
from omniforge.components import ArtifactKind, Component, get_component
from omniforge.components.base import KV_CACHE
from omniforge.params import FP32, Params

log = logging.getLogger(__name__)


def beside_dirs(
    params: Params, component: Component, variants_root: Path, variant: str
) -> dict[str, Path]:
    """The graphs a variant is timed beside: ``baseline``, the baseline component's same
    variant (a hybrid pair: its decode graph's), and ``reference``, the baseline component's
    ``talker_kv.speedup_reference`` when that is another graph. Nothing for fp32: two fp32
    copies of the full-size talker would not fit in memory together."""
    baseline = component.baseline
    if baseline is None or baseline not in params.components or variant == FP32:
        return {}
    settings = params.talker_kv
    graphs = component.graphs(variant, params)
    same = graphs.get(MODEL, graphs.get(DECODE, (baseline, variant)))[1]
    beside = {BASELINE: variant_dir(variants_root, baseline, same)}
    if settings.speedup_reference != same:
        beside[REFERENCE] = variant_dir(variants_root, baseline, settings.speedup_reference)
    return beside


def variant_files(
    params: Params, component: ArtifactKind, variants_root: Path, variant: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The bytes a variant's figures are of: its files, and those of the graphs it is timed
    beside, named ``baseline/...`` and ``reference/...``."""
    files = graph_files(component.graph_dirs(variant, params, variants_root))
    if not isinstance(component, Component) or component.graph_kind != KV_CACHE:
        return records_as_dicts(files), None
    beside = beside_dirs(params, component, variants_root, variant)
    if not beside:
        return records_as_dicts(files), None
    beside_files = [
        record | {"name": f"{role}/{record['name']}"}
        for role, directory in beside.items()
        for record in records_as_dicts(artifact_files(directory))
    ]
    return records_as_dicts(files), beside_files


def benchmark_component(
    params: Params, name: str, variants_root: Path, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Size, load time, latency and peak RSS of every variant beside PyTorch eager.

    ``previous``: the stage's last report; a variant whose fingerprint is unchanged keeps its
    figures (:mod:`.reuse`). The report's ``plot`` holds the latency plot's rows (x under
    ``plot_x``).
    """
    from omniforge.sources import open_source

    settings = params.benchmark
    component = get_component(name)
    kv = component.graph_kind == KV_CACHE
    configs = open_source(params.model).configs
    cases = component.benchmark_cases(
        configs, settings.batch, settings.lengths[name], seed=params.validate_.seed
    )
    plan = TimingPlan(settings.threads, settings.warmup, settings.iterations, settings.load_repeats)
    plain_cases = [(case.label, case.inputs) for case in cases]
    largest = max(cases, key=lambda case: case.length).label
    report: dict[str, Any] = {
        "threads": plan.threads,
        "iterations": plan.iterations,
        "batch": settings.batch,
    }
    previous = previous or {}
    run_context = context(params)
    keys, files = {}, {}
    for variant in component.variants(params):
        files[variant] = variant_files(params, component, variants_root, variant)
        keys[variant] = fingerprint(run_context, variant, *files[variant])
    stale = [v for v in keys if kept(previous, v, keys[v]) is None]
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    torch_latency: dict[str, dict[str, float]] = {}
    eager_decode: dict[str, Any] | None = None
    if settings.compare_torch and not stale and "torch" in previous:
        log.info("%s: every variant unchanged: its figures and PyTorch's are kept", name)
        report["torch"] = previous["torch"]
    elif settings.compare_torch:
        log.info("%s: timing PyTorch eager", name)
        report["torch"] = run_in_child(
            f"benchmark of {name} (torch)",
            bench_torch,
            name,
            params.model.model_dump(),
            cases,
            plan,
        )
        torch_latency = report["torch"]["latency"]
        if kv:
            eager_decode = run_in_child(
                f"benchmark of {name} decode (torch)", bench_decode_torch, params.as_dict(), name
            )
    for variant in component.variants(params):
        what = f"{name}-{variant}"
        if variant not in stale:
            log.info("%s: %s unchanged (bytes, params, code, machine): figures kept", name, variant)
            report[variant] = previous[variant]
            continue
        log.info("%s: timing %s", name, variant)
        graphs = component.graph_dirs(variant, params, variants_root)
        if MODEL not in graphs:
            # A pair: timed below as the pipeline runs it, prefill graph then decode graph.
            figures: dict[str, Any] = {
                "graphs": {role: f"{d.parent.name}/{d.name}" for role, d in graphs.items()},
                "size": graphs_bytes(graphs),
            }
            model_dir, prefill_dir = graphs[DECODE], str(graphs[PREFILL])
        else:
            directory = graphs[MODEL]
            figures = run_in_child(
                f"benchmark of {what}", bench_onnx, str(directory), plain_cases, plan
            )
            figures["size"] = artifact_bytes(directory)
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
            model_dir, prefill_dir = directory, None
        if kv:
            beside = beside_dirs(params, component, variants_root, variant)
            decode_report = run_in_child(
                f"benchmark of {what} decode",
                bench_decode_onnx,
                params.as_dict(),
                name,
                str(model_dir),
                variant,
                {role: str(directory) for role, directory in beside.items()},
                prefill_dir,
            )
            for role, directory in beside.items():
                decode_report[role] = f"{component.baseline}/{directory.name}"
            if eager_decode is not None:
                decode_report = with_torch(decode_report, eager_decode)
            figures.update(decode_report)
        # Custody: publish checks that these are the bytes validate checked.
        figures["files"] = files[variant][0]
        figures[FINGERPRINT], figures[MEASURED_AT] = keys[variant], measured_at
        figures[MEASURED_ON] = run_context["machine"]["cpu"]
        report[variant] = figures
    report["plot"] = plot_rows(report, cases, component.length_name)
    report["plot_x"] = component.length_name
    return report
