"""The publish stage: gate the variants, then publish the ones that pass, atomically.

``models/published/<component>/<variant>/`` holds ``model.onnx`` and its external data;
``models/published/manifest.json`` lists each artifact with its files' bytes and sha256,
its graph I/O, the metrics that vetted it, the source, the toolchain and the params.
The whole published directory is replaced at once: a reader sees the old set or the new.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omniforge.artifacts import (
    SOURCE_FILENAME,
    FileRecord,
    atomic_directory,
    check_files,
    graph_signature,
    read_json_object,
    records_as_dicts,
    variant_dir,
    write_json,
)
from omniforge.components import get_component
from omniforge.errors import CustodyError
from omniforge.params import Gate, Params
from omniforge.runtime.manifest import MANIFEST_FILENAME, MANIFEST_VERSION

log = logging.getLogger(__name__)

TOOLCHAIN = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "onnxsim", "numpy")


@dataclass
class Candidate:
    """One built variant with the metrics that decide whether it ships."""

    component: str
    variant: str
    directory: Path
    graph_kind: str
    parity: dict[str, Any]
    benchmark: dict[str, Any]
    # What validate hashed before checking: the only bytes that may ship under these figures.
    files: list[FileRecord]
    reasons: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.component}-{self.variant}"


def toolchain_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in TOOLCHAIN:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def gate_reasons(candidate: Candidate, gate: Gate | None) -> list[str]:
    """Why a candidate fails its gate; empty when it passes."""
    if gate is None:
        return [f"no gate is configured for variant '{candidate.variant}' in publish.gates"]
    reasons = []
    parity = candidate.parity
    at_least, at_most = (lambda value, bound: value >= bound), (lambda value, bound: value <= bound)
    # (figure, where it is, bound, test, sign); a figure the component does not report is skipped.
    checks = (
        ("cosine", parity, gate.min_cosine, at_least, ">="),
        ("max_abs_error", parity, gate.max_abs_error, at_most, "<="),
        ("top1_agreement", parity, gate.min_top1_agreement, at_least, ">="),
        ("generation_forced_min_cosine", parity, gate.min_forced_cosine, at_least, ">="),
        (
            "generation_forced_top1_agreement",
            parity,
            gate.min_forced_top1_agreement,
            at_least,
            ">=",
        ),
        (
            "decode_real_time_factor",
            candidate.benchmark,
            gate.max_decode_real_time_factor,
            at_most,
            "<=",
        ),
    )
    for key, figures, bound, ok, sign in checks:
        if bound is None or key not in figures:
            continue
        if not ok(figures[key], bound):
            reasons.append(f"{key} {figures[key]:.6g} fails the gate ({sign} {bound:g})")
    if gate.min_steps_before_divergence is not None and "generation_steps" in parity:
        first = parity["generation_first_divergence_step"]
        equal_steps = parity["generation_steps"] if first < 0 else first
        if equal_steps < gate.min_steps_before_divergence:
            reasons.append(
                f"greedy codes equal PyTorch's for {equal_steps} of {parity['generation_steps']} "
                f"steps, the gate asks {gate.min_steps_before_divergence}"
            )
    if gate.max_p50_ms is not None:
        p50 = candidate.benchmark.get("largest_case_p50_ms")
        if p50 is None:
            reasons.append("no benchmark latency to check against max_p50_ms")
        elif p50 > gate.max_p50_ms:
            reasons.append(f"p50 latency {p50:.3f} ms exceeds the budget of {gate.max_p50_ms:g} ms")
    return reasons


def publish(
    candidates: list[Candidate],
    gates: dict[str, Gate],
    out_root: Path,
    sources: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Copy the candidates that pass their gates under ``out_root`` and write the manifest.

    Everything is written into a temporary sibling of ``out_root`` that then replaces it:
    a loader never meets a half-finished publish, and a failed one leaves the last good
    set in place.
    """
    artifacts: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    with atomic_directory(Path(out_root)) as tmp:
        for candidate in candidates:
            candidate.reasons = gate_reasons(candidate, gates.get(candidate.variant))
            if candidate.reasons:
                log.warning("not publishing %s: %s", candidate.key, "; ".join(candidate.reasons))
                rejected.append(
                    {
                        "component": candidate.component,
                        "variant": candidate.variant,
                        "reasons": candidate.reasons,
                    }
                )
                continue
            relative = f"{candidate.component}/{candidate.variant}"
            target = tmp / relative
            shutil.copytree(candidate.directory, target)
            check_files(target, candidate.files, f"validate's record of {candidate.key}")
            artifacts.append(
                {
                    "component": candidate.component,
                    "variant": candidate.variant,
                    "graph_kind": candidate.graph_kind,
                    "path": relative,
                    "io": graph_signature(target),
                    "files": records_as_dicts(candidate.files),
                    "metrics": {"parity": candidate.parity, "benchmark": candidate.benchmark},
                    "source": sources.get(candidate.component),
                }
            )
            log.info("published %s", candidate.key)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "artifacts": artifacts,
            "rejected": rejected,
            "toolchain": toolchain_versions(),
            "params": params,
        }
        write_json(tmp / MANIFEST_FILENAME, manifest)
    return manifest


def recorded_files(report: dict[str, Any], where: str) -> list[FileRecord]:
    """The file records a stage kept of what it checked or timed."""
    try:
        return [FileRecord.from_dict(raw) for raw in report["files"]]
    except (KeyError, TypeError, ValueError) as err:
        raise CustodyError(
            f"{where} records no file hashes ({err!r}): re-run that stage, so that publish "
            "knows which bytes were vetted"
        ) from None


def check_same_bytes(validated: list[FileRecord], timed: list[FileRecord], key: str) -> None:
    """Benchmark figures must describe the bytes validate checked."""
    timed_by_name = {record.name: record for record in timed}
    for record in validated:
        other = timed_by_name.get(record.name)
        if other != record:
            theirs = other.sha256 if other else "no such file"
            raise CustodyError(
                f"{key}/{record.name}: benchmark timed sha256 {theirs}, validate checked "
                f"{record.sha256}: the figures describe different bytes; re-run `dvc repro`"
            )
    if len(timed) != len(validated):
        raise CustodyError(f"{key}: benchmark timed other files than validate checked")


def collect_candidates(
    params: Params, variants_root: Path, validation_file: Path, benchmark_root: Path
) -> list[Candidate]:
    """Every built variant with its parity (validate's metrics), benchmark figures and the
    file hashes validate recorded."""
    validation = read_json_object(validation_file)
    candidates = []
    for name in params.components:
        benchmark_file = Path(benchmark_root) / f"{name}.json"
        benchmark = read_json_object(benchmark_file)
        for variant in params.variants:
            key = f"{name}-{variant}"
            try:
                parity = validation[name]["variants"][variant]
                files = recorded_files(
                    {"files": validation[name]["files"][variant]}, f"{validation_file} ({key})"
                )
                figures = benchmark[variant]
            except KeyError as err:
                raise CustodyError(
                    f"{key}: {validation_file} or {benchmark_file} has no entry {err}: "
                    "re-run validate and benchmark"
                ) from None
            check_same_bytes(files, recorded_files(figures, f"{benchmark_file} ({key})"), key)
            candidates.append(
                Candidate(
                    component=name,
                    variant=variant,
                    directory=variant_dir(variants_root, name, variant),
                    graph_kind=get_component(name).graph_kind,
                    parity=parity,
                    benchmark=figures,
                    files=files,
                )
            )
    return candidates


def publish_pipeline(
    params: Params,
    variants_root: Path,
    exports_root: Path,
    validation_file: Path,
    benchmark_root: Path,
    out_root: Path,
) -> dict[str, Any]:
    """The publish stage: gate every candidate, publish, and return the summary metrics."""
    candidates = collect_candidates(params, variants_root, validation_file, benchmark_root)
    sources = {
        name: read_json_object(Path(exports_root) / name / SOURCE_FILENAME)
        for name in params.components
    }
    manifest = publish(candidates, params.publish.gates, out_root, sources, params.as_dict())
    return summary(manifest)


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What publish reports as metrics: how many shipped, how many were held back."""
    return {
        "published": len(manifest["artifacts"]),
        "rejected": len(manifest["rejected"]),
        "published_variants": sorted(
            f"{a['component']}-{a['variant']}" for a in manifest["artifacts"]
        ),
    }
