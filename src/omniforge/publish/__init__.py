"""The publish stage: gate the variants, then publish the ones that pass, atomically.

``models/published/<name>/<variant>/`` holds its graphs (one: ``model.onnx`` and its
external data in the folder itself; several: one subfolder per role, e.g. a hybrid pair's
``prefill/`` and ``decode/``, Token2Wav's ``conditioning/``, ``dit/`` and ``vocoder/``)
with the data files they carry, its own ``manifest.json`` entry and a model card
``README.md``; ``models/published/manifest.json`` indexes them all. Each entry lists its
files' bytes and sha256 (the ones validate checked), its graph I/O, the metrics that vetted
it, the source, the toolchain and the params. The whole published directory is replaced at
once: a reader sees the old set or the new one.
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
    graph_folder,
    graph_signature,
    read_json_object,
    records_as_dicts,
    sha256_file,
    write_json,
)
from omniforge.components import ArtifactKind, artifact_kinds
from omniforge.errors import CustodyError
from omniforge.params import FP32, Gate, Params
from omniforge.publish.gates import refusals
from omniforge.publish.headline import headline
from omniforge.publish.model_card import FILENAME as MODEL_CARD
from omniforge.publish.model_card import model_card
from omniforge.runtime.manifest import (
    MANIFEST_FILENAME,
    MANIFEST_VERSION,
    parse_artifact,
    parse_set,
)

log = logging.getLogger(__name__)

TOOLCHAIN = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "onnxsim", "numpy")


@dataclass
class Candidate:
    """One built variant with the metrics that decide whether it ships."""

    component: str
    variant: str
    # Its graphs: role -> built directory (copied to the role's subfolder, or for a lone
    # graph into the artifact's folder itself).
    graphs: dict[str, Path]
    graph_kind: str
    parity: dict[str, Any]
    benchmark: dict[str, Any]
    # What validate hashed before checking: the only bytes that may ship under these figures.
    files: list[FileRecord]
    reasons: list[str] = field(default_factory=list)
    refused_by: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.component}-{self.variant}"

    def folders(self) -> dict[str, str]:
        """Role -> where the graph lies in the artifact."""
        return {role: graph_folder(role, len(self.graphs)) for role in self.graphs}


def toolchain_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in TOOLCHAIN:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def judge(candidate: Candidate, gates: dict[str, Gate]) -> bool:
    """Apply the candidate's gate; True when it passes."""
    found = refusals(
        candidate.variant, candidate.parity, candidate.benchmark, gates.get(candidate.variant)
    )
    candidate.reasons = [r.reason for r in found]
    candidate.refused_by = sorted({r.gate for r in found})
    return not found


def copy_directory(src: Path, dst: Path) -> None:
    """Copy every file under ``src`` into ``dst`` (made as needed), metadata included.

    Unlike ``shutil.copytree``, which gathers failures into one ``shutil.Error`` with no
    errno, a failed copy raises its own OSError: a full disk is named as one.
    """
    for path in sorted(Path(src).rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def publish_one(candidate: Candidate, target: Path, context: dict[str, Any]) -> dict[str, Any]:
    """Copy one candidate into ``target``, check it is what validate checked, describe it."""
    folders = candidate.folders()
    for role, directory in candidate.graphs.items():
        copy_directory(directory, target / folders[role])
    try:
        check_files(target, candidate.files, f"validate's record of {candidate.key}")
    except CustodyError as err:
        # Name the built file the user can look at, not the temporary copy being checked.
        message = str(err)
        built = ", ".join(f"{d.parent.name}/{d.name}" for d in candidate.graphs.values())
        for role, directory in candidate.graphs.items():
            message = message.replace(str(target / folders[role]).rstrip("/"), str(directory))
        raise CustodyError(
            f"{message}\n  these bytes were never validated: nothing is published and the last "
            f"good set stays in place. Rebuild {built} (`dvc repro -f -s "
            "quantize@<component>-<scheme>`, or `simplify@<component>` for fp32), then "
            "`dvc repro`"
        ) from None
    entry = {
        "component": candidate.component,
        "variant": candidate.variant,
        "graph_kind": candidate.graph_kind,
        "path": f"{candidate.component}/{candidate.variant}",
        "graphs": {
            role: {
                "folder": folder,
                "io": graph_signature(target / folder),
                "built": f"{candidate.graphs[role].parent.name}/{candidate.graphs[role].name}",
            }
            for role, folder in folders.items()
        },
        "files": records_as_dicts(candidate.files),
        "metrics": {
            "parity": candidate.parity,
            "benchmark": candidate.benchmark,
            "headline": headline(candidate.parity, candidate.benchmark, True, []),
        },
        "source": context["sources"].get(candidate.component),
    }
    card = target / MODEL_CARD
    card.write_text(model_card(entry, entry["metrics"]["headline"], context["common"]["params"]))
    entry["files"].append(
        {"name": MODEL_CARD, "bytes": card.stat().st_size, "sha256": sha256_file(card)}
    )
    # The artifact describes itself: a copy fetched alone is verified from this file.
    own = {"manifest_version": MANIFEST_VERSION, "artifact": entry, **context["common"]}
    # Written only as every reader reads it: the schema is checked here, not first by a user.
    parse_artifact(own, target / MANIFEST_FILENAME)
    write_json(target / MANIFEST_FILENAME, own)
    return entry


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
    context = {
        "sources": sources,
        "common": {"toolchain": toolchain_versions(), "params": params},
    }
    artifacts: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    with atomic_directory(Path(out_root)) as tmp:
        for candidate in candidates:
            if not judge(candidate, gates):
                log.warning("not publishing %s: %s", candidate.key, "; ".join(candidate.reasons))
                rejected.append(
                    {
                        "component": candidate.component,
                        "variant": candidate.variant,
                        "reasons": candidate.reasons,
                        "refused_by": candidate.refused_by,
                    }
                )
                continue
            target = tmp / candidate.component / candidate.variant
            artifacts.append(publish_one(candidate, target, context))
            log.info("published %s", candidate.key)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "artifacts": artifacts,
            "rejected": rejected,
            **context["common"],
        }
        parse_set(manifest, tmp / MANIFEST_FILENAME)
        write_json(tmp / MANIFEST_FILENAME, manifest)
    return manifest


def recorded_files(records: Any, where: str) -> list[FileRecord]:
    """The file records a stage kept of what it checked or timed."""
    try:
        return [FileRecord.from_dict(raw) for raw in records]
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
    for kind in artifact_kinds(params):
        if not kind.published:
            continue
        name = kind.name
        benchmark_file = Path(benchmark_root) / f"{name}.json"
        benchmark = read_json_object(benchmark_file)
        for variant in kind.variants(params):
            key = f"{name}-{variant}"
            try:
                parity = validation[name]["variants"][variant]
                files = recorded_files(validation[name]["files"][variant], f"{validation_file}")
                figures = benchmark[variant]
            except KeyError as err:
                raise CustodyError(
                    f"{key}: {validation_file} or {benchmark_file} has no entry {err}: "
                    "re-run validate"
                ) from None
            check_same_bytes(files, recorded_files(figures.get("files"), f"{benchmark_file}"), key)
            candidates.append(
                Candidate(
                    component=name,
                    variant=variant,
                    graphs=kind.graph_dirs(variant, params, variants_root),
                    graph_kind=kind.graph_kind,
                    parity=parity,
                    benchmark=figures,
                    files=files,
                )
            )
    return candidates


def fastest(manifest: dict[str, Any]) -> dict[str, str]:
    """The published KV talker variant that is fastest at each job a voice pipeline does."""
    jobs = {"prefill": "prefill_p50_ms", "decode": "decode_p50_ms", "utterance": "utterance_s"}
    out = {}
    for job, key in jobs.items():
        timed = [
            (a["metrics"]["benchmark"][key], f"{a['component']}/{a['variant']}")
            for a in manifest["artifacts"]
            if key in a["metrics"]["benchmark"]
        ]
        if timed:
            out[job] = min(timed)[1]
    return out


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What publish reports: what shipped, what was held back and why, what is fastest."""
    return {
        "published": sorted(f"{a['component']}/{a['variant']}" for a in manifest["artifacts"]),
        "rejected": {
            f"{r['component']}/{r['variant']}": r["reasons"] for r in manifest["rejected"]
        },
        "fastest": fastest(manifest),
    }


def headlines(candidates: list[Candidate]) -> dict[str, dict[str, Any]]:
    """``{component-variant: headline}`` of every candidate, published or not."""
    return {c.key: headline(c.parity, c.benchmark, not c.reasons, c.refused_by) for c in candidates}


def first_part(kind: ArtifactKind, params: Params) -> str:
    """The component whose export records where an artifact's weights came from."""
    return next(iter(kind.graphs(FP32, params).values()))[0]


def publish_pipeline(
    params: Params,
    variants_root: Path,
    exports_root: Path,
    validation_file: Path,
    benchmark_root: Path,
    out_root: Path,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The publish stage: gate every candidate, publish; the summary and the headlines."""
    candidates = collect_candidates(params, variants_root, validation_file, benchmark_root)
    sources = {
        kind.name: read_json_object(Path(exports_root) / first_part(kind, params) / SOURCE_FILENAME)
        for kind in artifact_kinds(params)
    }
    manifest = publish(candidates, params.publish.gates, out_root, sources, params.as_dict())
    return summary(manifest), headlines(candidates)
