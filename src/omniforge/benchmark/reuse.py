"""Figures of unchanged variants are kept, not re-timed, so an experiment's diff is its change.

A variant's figures are kept from the stage's previous report only when everything they
depend on is the same: the variant's bytes (and those of the graphs it was timed beside),
the params that shape the timing, the code that times and runs it, and the machine (CPU model
and flags, host, the versions of onnxruntime, numpy, torch and transformers): a
:class:`Dependence` per benchmark. That key is the entry's ``fingerprint``;
each entry also says when it was ``measured_at``. PyTorch eager is timed again whenever any
variant is, so every ratio measured in a run is measured side by side in that run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from omniforge.artifacts import read_json
from omniforge.errors import ArtifactError
from omniforge.params import Params

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint"
# sha256 of each WAV a report's figures were measured with (Token2Wav's and the chain's).
WAVS = "wavs"
MEASURED_AT = "measured_at"
# The CPU model the figures were timed on: ``omniforge show`` says so beside them.
MEASURED_ON = "measured_on"


@dataclass(frozen=True)
class Dependence:
    """What a benchmark's figures depend on besides the bytes they time: params (sections or
    dotted fields of params.yaml) and the package's code (folders or files)."""

    params: tuple[str, ...]
    code: tuple[str, ...]


# A graph's timing: the model's dims, the timing plan, the decode settings and the seed of
# the inputs; the code that times and runs the graphs.
GRAPH_TIMING = Dependence(
    params=("model", "benchmark", "talker_kv", "validate.seed"),
    code=("benchmark", "children.py", "runtime"),
)
# Token2Wav's whole syntheses: the synthesis settings and the utterance. PyTorch's side is
# built by the sources: their code too.
SYNTHESIS_TIMING = Dependence(
    params=(
        "model",
        "benchmark.threads",
        "benchmark.compare_torch",
        "validate.seed",
        "token2wav.metadata",
        "token2wav.settings",
        "token2wav.stream",
        "token2wav.bench_codes",
        "token2wav.bench_repeats",
    ),
    code=("benchmark", "children.py", "runtime", "sources"),
)
# The voice chain: its question, setting and turns, the synthesis settings; its PyTorch side
# (the reference codes and audio the fp32 set is held against) comes from reference.py.
CHAIN_TIMING = Dependence(
    params=(
        "model",
        "benchmark.threads",
        "token2wav.metadata",
        "token2wav.settings",
        "token2wav.stream",
        "chain",
    ),
    code=("benchmark", "children.py", "runtime", "sources", "reference.py"),
)


def machine() -> dict[str, str]:
    """What a timing says about the machine it ran on."""
    cpu = {"model name": platform.processor(), "flags": ""}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in reversed(cpuinfo.read_text().splitlines()):
            key, _, value = line.partition(":")
            if key.strip() in cpu:
                cpu[key.strip()] = value.strip()
    return {
        "cpu": cpu["model name"],
        "cpu_flags_sha256": hashlib.sha256(cpu["flags"].encode()).hexdigest(),
        "host": platform.node(),
        **{package: _version(package) for package in RUNTIMES},
    }


# What runs the timed code, on either side: a new version re-times.
RUNTIMES = ("onnxruntime", "numpy", "torch", "transformers")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def code_digest(code: tuple[str, ...]) -> str:
    """sha256 over the package's files under ``code`` (folders or files), by relative path."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for entry in code:
        path = package / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def context(params: Params, dependence: Dependence = GRAPH_TIMING) -> dict[str, Any]:
    """Everything but the bytes that a benchmark's figures depend on."""
    settings = params.as_dict()
    values = {}
    for key in dependence.params:
        value: Any = settings
        for part in key.split("."):
            value = value[part]
        values[key] = value
    return {"params": values, "code": code_digest(dependence.code), "machine": machine()}


def fingerprint(
    run_context: dict[str, Any],
    variant: str,
    files: list[dict[str, Any]],
    beside_files: list[dict[str, Any]] | None,
) -> str:
    """The key of one variant's figures."""
    key = {
        "context": run_context,
        "variant": variant,
        "files": files,
        "beside_files": beside_files,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def previous_report(path: Path) -> dict[str, Any]:
    """The stage's last report, if it left one that can be read; else nothing to keep."""
    if not path.is_file():
        return {}
    try:
        report = read_json(path)
    except (OSError, ArtifactError) as err:
        log.warning("%s: every variant is timed again", err)
        return {}
    if not isinstance(report, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found a {type(report).__name__}")
    return report


def wav_digests(waveforms: dict[str, np.ndarray], rate: int) -> dict[str, str]:
    """sha256 of each WAV as :func:`~omniforge.runtime.wav.write_wav` writes it, by name: the
    report records which audio its figures were measured with."""
    from omniforge.runtime.wav import wav_bytes

    return {
        name: hashlib.sha256(wav_bytes(waveform, rate)).hexdigest()
        for name, waveform in waveforms.items()
    }


def kept_audio(folder: Path, digests: dict[str, str]) -> dict[str, np.ndarray] | None:
    """The waveforms a previous run wrote (``<stem>.wav`` in ``folder``), by stem, if each file
    is still the one whose sha256 its report recorded; else None (missing, unreadable or
    another run's audio: the report and the DVC-tracked WAVs can part ways)."""
    from omniforge.runtime.wav import read_wav

    waveforms = {}
    for stem, digest in digests.items():
        path = Path(folder) / f"{stem}.wav"
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                return None
            waveforms[stem], _ = read_wav(path)
        except (OSError, ArtifactError):
            return None
    return waveforms


def kept(previous: dict[str, Any], variant: str, key: str) -> dict[str, Any] | None:
    """The previous figures of a variant if they were measured under the same key."""
    entry = previous.get(variant)
    if isinstance(entry, dict) and entry.get(FINGERPRINT) == key:
        return entry
    return None
