"""The published manifest: gate the variants, publish atomically, verify and load by hash.

``models/published/<component>/<variant>/`` holds ``model.onnx`` and its external data;
``models/published/manifest.json`` lists each artifact with its files' bytes and sha256,
its graph I/O, the metrics that vetted it, the source, the toolchain and the params.
A loader refuses any file whose hash differs from the manifest.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omniforge.errors import ArtifactError
from omniforge.onnx_io import (
    artifact_files,
    atomic_directory,
    graph_signature,
    read_json,
    records_as_dicts,
    sha256_file,
    variant_dir,
    write_json,
)
from omniforge.params import VARIANTS, Gate

log = logging.getLogger(__name__)

MANIFEST_FILENAME = "manifest.json"
MANIFEST_VERSION = 1
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

    Each ``<component>/`` directory is replaced atomically, then the manifest, last: a
    loader that meets a half-finished publish finds hashes that do not match and refuses.
    """
    artifacts: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for component in dict.fromkeys(c.component for c in candidates):
        with atomic_directory(Path(out_root) / component) as tmp:
            for candidate in (c for c in candidates if c.component == component):
                candidate.reasons = gate_reasons(candidate, gates.get(candidate.variant))
                if candidate.reasons:
                    log.warning(
                        "not publishing %s: %s", candidate.key, "; ".join(candidate.reasons)
                    )
                    rejected.append(
                        {
                            "component": component,
                            "variant": candidate.variant,
                            "reasons": candidate.reasons,
                        }
                    )
                    continue
                target = tmp / candidate.variant
                shutil.copytree(candidate.directory, target)
                artifacts.append(
                    {
                        "component": component,
                        "variant": candidate.variant,
                        "graph_kind": candidate.graph_kind,
                        "path": f"{component}/{candidate.variant}",
                        "io": graph_signature(target),
                        "files": records_as_dicts(artifact_files(target)),
                        "metrics": {"parity": candidate.parity, "benchmark": candidate.benchmark},
                        "source": sources.get(component),
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
    write_json(Path(out_root) / MANIFEST_FILENAME, manifest)
    return manifest


def collect_candidates(
    components: list[str],
    variants_root: Path,
    validation: dict[str, Any],
    benchmark_root: Path,
) -> list[Candidate]:
    """Every built variant with its parity (validate's metrics) and benchmark figures."""
    from omniforge.components import get_component

    candidates = []
    for name in components:
        benchmark = read_json(Path(benchmark_root) / f"{name}.json")
        candidates += [
            Candidate(
                component=name,
                variant=variant,
                directory=variant_dir(variants_root, name, variant),
                graph_kind=get_component(name).graph_kind,
                parity=validation[name]["variants"][variant],
                benchmark=benchmark[variant],
            )
            for variant in VARIANTS
        ]
    return candidates


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What publish reports as metrics: how many shipped, how many were held back."""
    return {
        "published": len(manifest["artifacts"]),
        "rejected": len(manifest["rejected"]),
        "published_variants": sorted(
            f"{a['component']}-{a['variant']}" for a in manifest["artifacts"]
        ),
    }


def load_manifest(published_dir: Path) -> dict[str, Any]:
    manifest = read_json(Path(published_dir) / MANIFEST_FILENAME)
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ArtifactError(
            f"{published_dir}: manifest version {manifest.get('manifest_version')!r}, "
            f"this omniforge reads version {MANIFEST_VERSION}"
        )
    return manifest


def find_artifact(manifest: dict[str, Any], component: str, variant: str) -> dict[str, Any]:
    for artifact in manifest["artifacts"]:
        if artifact["component"] == component and artifact["variant"] == variant:
            return artifact
    published = sorted(f"{a['component']}/{a['variant']}" for a in manifest["artifacts"])
    raise ArtifactError(f"{component}/{variant} is not published (published: {published})")


def verify_artifact(published_dir: Path, artifact: dict[str, Any]) -> Path:
    """Check every file of an artifact against the manifest's bytes and sha256."""
    directory = Path(published_dir) / artifact["path"]
    for record in artifact["files"]:
        path = directory / record["name"]
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise ArtifactError(f"{path}: {size} bytes, the manifest says {record['bytes']}")
        digest = sha256_file(path)
        if digest != record["sha256"]:
            raise ArtifactError(
                f"{path}: sha256 {digest} differs from the manifest's {record['sha256']}"
            )
    return directory


def verify_all(published_dir: Path) -> list[str]:
    """Verify every published artifact; returns ``component/variant`` of each one checked."""
    manifest = load_manifest(published_dir)
    for artifact in manifest["artifacts"]:
        verify_artifact(published_dir, artifact)
    return [f"{a['component']}/{a['variant']}" for a in manifest["artifacts"]]


def load_session(published_dir: Path, component: str, variant: str, threads: int = 0) -> Any:
    """An onnxruntime session for a published artifact, after verifying its hashes."""
    from omniforge.runtime import open_session

    manifest = load_manifest(published_dir)
    directory = verify_artifact(published_dir, find_artifact(manifest, component, variant))
    return open_session(directory, threads=threads)
