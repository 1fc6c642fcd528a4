"""What ONNX models a folder holds, judged by their files and their graphs, not their names.

For every ``.onnx`` under a folder: its true size (the graph plus every external-data file
it references), whether each of those files is present and long enough, its inputs and
outputs, and which link of the voice pipeline it can fill (projection → talker →
Token2Wav), checked against the other models in the folder by the shape contract. Reading a
graph never loads its weights.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omniforge.talker_io import CONTROL_IDS, PAST_PREFIX, TOKEN2WAV_NUM_EMBEDS

PROJECTION, TALKER, TALKER_KV, UNKNOWN = "projection", "talker", "talker (KV cache)", "unknown"


@dataclass
class ExternalFile:
    location: str
    needed_bytes: int  # the end of the last tensor stored in it
    bytes_on_disk: int | None  # None: missing

    @property
    def complete(self) -> bool:
        return self.bytes_on_disk is not None and self.bytes_on_disk >= self.needed_bytes


@dataclass
class ModelReport:
    path: str
    graph_bytes: int
    external: list[ExternalFile]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    role: str = UNKNOWN
    input_width: int | None = None
    output_width: int | None = None  # the projection's output, or the talker's vocabulary
    fits: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def total_bytes(self) -> int:
        return self.graph_bytes + sum(f.bytes_on_disk or 0 for f in self.external)

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_bytes"] = self.total_bytes
        out["ok"] = self.ok
        for item, external in zip(out["external"], self.external, strict=True):
            item["present"] = external.bytes_on_disk is not None
            item["complete"] = external.complete
        return out


def _last_dim(values: list[dict[str, Any]], name: str) -> int | None:
    for value in values:
        if value["name"] == name and value["shape"]:
            last = value["shape"][-1]
            return last if isinstance(last, int) else None
    return None


def _classify(report: ModelReport) -> None:
    inputs = {v["name"] for v in report.inputs}
    outputs = {v["name"] for v in report.outputs}
    if "audio_features" in inputs and "audio_embeds" in outputs:
        report.role = PROJECTION
        report.input_width = _last_dim(report.inputs, "audio_features")
        report.output_width = _last_dim(report.outputs, "audio_embeds")
    elif "inputs_embeds" in inputs and "logits" in outputs:
        kv = any(name.startswith(PAST_PREFIX) for name in inputs)
        report.role = TALKER_KV if kv else TALKER
        report.input_width = _last_dim(report.inputs, "inputs_embeds")
        report.output_width = _last_dim(report.outputs, "logits")


def read_model(path: Path, root: Path) -> ModelReport:
    """One model's files and graph; a graph that cannot be read is reported, not raised."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from omniforge.artifacts import describe_values

    report = ModelReport(path.relative_to(root).as_posix(), 0, [], [], [])

    def unreadable(why: str) -> ModelReport:
        report.error = why
        report.problems.append(why)
        return report

    if not path.exists():
        return unreadable(f"a link to {os.readlink(path)!r}, which does not exist")
    if not path.is_file():
        return unreadable("not a file")
    report.graph_bytes = path.stat().st_size
    if report.graph_bytes == 0:
        return unreadable("an empty file (0 bytes), not an ONNX graph")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError as err:
        return unreadable(f"cannot be read: {err.strerror or err}")
    except Exception as err:  # a truncated or foreign file: say so, keep going
        return unreadable(f"not a readable ONNX graph: {type(err).__name__}: {err}")
    if not model.graph.node and not model.graph.output:
        return unreadable("parses as ONNX but holds no graph (no nodes, no outputs)")
    needed: dict[str, int] = {}
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            info = ExternalDataInfo(tensor)
            end = (info.offset or 0) + (info.length or 0)
            needed[info.location] = max(needed.get(info.location, 0), end)
    for location, end in sorted(needed.items()):
        data = path.parent / location
        if not _stays_in(path.parent, location):
            report.external.append(ExternalFile(location, end, None))
            report.problems.append(
                f"external data {location!r} leaves the model's folder (onnxruntime refuses it)"
            )
            continue
        size = data.stat().st_size if data.is_file() else None
        report.external.append(ExternalFile(location, end, size))
        if size is None:
            report.problems.append(f"external data {location} is missing")
        elif size < end:
            report.problems.append(f"external data {location} is truncated ({size} of {end} B)")
    report.inputs = describe_values(model.graph.input)
    report.outputs = describe_values(model.graph.output)
    _classify(report)
    return report


def _stays_in(folder: Path, location: str) -> bool:
    """An external-data location onnxruntime accepts: relative, and inside the folder."""
    relative = Path(location)
    if not location or relative.is_absolute() or ".." in relative.parts:
        return False
    return (folder / relative).resolve().is_relative_to(folder.resolve())


def name_models(paths: list[str], listed: int = 3) -> str:
    """A few paths by name, a long list as its first ones and a count: table rows stay short."""
    if len(paths) <= listed:
        return ", ".join(paths)
    return f"{', '.join(paths[: listed - 1])} and {len(paths) - listed + 1} more"


def judge_chain(reports: list[ModelReport], token2wav_num_embeds: int) -> None:
    """Which link each model can fill, given the others: widths must meet, codes must fit."""
    projections = [r for r in reports if r.role == PROJECTION]
    talkers = [r for r in reports if r.role in (TALKER, TALKER_KV)]
    for talker in talkers:
        feeding = [p.path for p in projections if p.output_width == talker.input_width]
        if feeding:
            talker.fits.append(f"reads {name_models(feeding)}")
        elif projections:
            widths = sorted({p.output_width for p in projections if p.output_width is not None})
            talker.problems.append(
                f"input width {talker.input_width} matches no projection here (they write {widths})"
            )
        vocab = talker.output_width
        if vocab is None or vocab < token2wav_num_embeds:
            talker.problems.append(
                f"vocabulary {vocab} does not hold Token2Wav's codes [0, {token2wav_num_embeds})"
            )
        elif max(CONTROL_IDS) >= vocab:
            talker.problems.append(
                f"vocabulary {vocab} cannot emit codec control ids {CONTROL_IDS}"
            )
        else:
            talker.fits.append(f"feeds Token2Wav (codes < {token2wav_num_embeds})")
    for projection in projections:
        fed = [t.path for t in talkers if t.input_width == projection.output_width]
        if fed:
            projection.fits.append(f"feeds {name_models(fed)}")
        elif talkers:
            projection.problems.append(
                f"output width {projection.output_width} is read by no talker here"
            )


def io_summary(values: list[dict[str, Any]]) -> list[str]:
    """Graph inputs or outputs, one line each, per-layer ones folded: ``past_key_values.*.key
    [batch, 4, past, 128] x24``."""
    folded: dict[tuple[str, str], int] = {}
    for value in values:
        name = re.sub(r"\.\d+\.", ".*.", value["name"])
        shape = "[" + ", ".join(str(d) for d in value["shape"]) + "]"
        folded[(name, shape)] = folded.get((name, shape), 0) + 1
    return [f"{name} {shape}" + (f" ×{n}" if n > 1 else "") for (name, shape), n in folded.items()]


def inventory(root: Path, token2wav_num_embeds: int = TOKEN2WAV_NUM_EMBEDS) -> list[ModelReport]:
    """Every ``.onnx`` under ``root`` (symlinks not followed), sorted by path."""
    root = Path(root)
    unreadable: list[ModelReport] = []

    def cannot_list(err: OSError) -> None:
        folder = Path(err.filename or root)
        why = f"folder cannot be read: {err.strerror or err}"
        name = folder.relative_to(root).as_posix() if folder != root else "."
        unreadable.append(ModelReport(name + "/", 0, [], [], [], problems=[why], error=why))

    paths = sorted(
        Path(folder) / name
        for folder, _, names in os.walk(root, onerror=cannot_list)
        for name in names
        if name.endswith(".onnx")
    )
    reports = [read_model(path, root) for path in paths]
    judge_chain(reports, token2wav_num_embeds)
    return sorted(reports + unreadable, key=lambda report: report.path)
