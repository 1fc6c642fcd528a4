"""Figures of unchanged variants are kept, not re-timed, so an experiment's diff is its change.

A variant's figures are kept from the stage's previous report only when everything they
depend on is the same: the variant's bytes (and those of the graphs it was timed beside),
the params that shape the timing, the benchmark and runtime code, and the machine (CPU model
and flags, onnxruntime and numpy versions, host). That key is the entry's ``fingerprint``;
each entry also says when it was ``measured_at``. PyTorch eager is timed again whenever any
variant is, so every ratio measured in a run is measured side by side in that run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from omniforge.artifacts import read_json
from omniforge.errors import ArtifactError
from omniforge.params import Params

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint"
MEASURED_AT = "measured_at"
# The CPU model the figures were timed on: ``omniforge show`` says so beside them.
MEASURED_ON = "measured_on"
# The params a graph's timing depends on: the model's dims, the timing plan and the decode
# settings, and the seed of the benchmark's inputs.
TIMING_PARAMS = ("model", "benchmark", "talker_kv")
# An assembly's (Token2Wav's) whole syntheses: its synthesis settings instead of the decode's.
SYNTHESIS_TIMING_PARAMS = ("model", "benchmark", "token2wav")
# The voice chain: the synthesis settings and the chain's own (question, setting, turns).
CHAIN_TIMING_PARAMS = ("model", "benchmark", "token2wav", "chain")
# The code that times and runs the graphs: a change there re-times everything.
TIMING_CODE = ("benchmark", "runtime")


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
        "onnxruntime": metadata.version("onnxruntime"),
        "numpy": metadata.version("numpy"),
    }


def code_digest() -> str:
    """sha256 over the timing code's files, by relative path."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for folder in TIMING_CODE:
        for path in sorted((package / folder).rglob("*.py")):
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def context(params: Params, timing_params: tuple[str, ...] = TIMING_PARAMS) -> dict[str, Any]:
    """Everything but the bytes that a component's timings depend on."""
    settings = params.as_dict()
    return {
        "params": {key: settings[key] for key in timing_params},
        "seed": params.validate_.seed,
        "code": code_digest(),
        "machine": machine(),
    }


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


def kept_audio(folder: Path, stems: list[str]) -> dict[str, np.ndarray] | None:
    """The waveforms a previous run wrote (``<stem>.wav`` in ``folder``), or None if one is
    missing or unreadable: figures are only kept with the audio they were measured with."""
    from omniforge.runtime.wav import read_wav

    waveforms = {}
    for stem in stems:
        try:
            waveforms[stem], _ = read_wav(Path(folder) / f"{stem}.wav")
        except ArtifactError:
            return None
    return waveforms


def kept(previous: dict[str, Any], variant: str, key: str) -> dict[str, Any] | None:
    """The previous figures of a variant if they were measured under the same key."""
    entry = previous.get(variant)
    if isinstance(entry, dict) and entry.get(FINGERPRINT) == key:
        return entry
    return None
