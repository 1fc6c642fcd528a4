"""The voice team's latency table, measured: one spoken question through the whole chain.

The same WAV goes through transformers' modules in PyTorch eager (encoder, talker, then
Token2Wav on every code: transformers does not stream) and through each chain set of
published artifacts (``fp32``: every link's fp32; ``fastest``: each link's fastest
published variant), the talker's codes streamed into Token2Wav as they come. Each contender
runs in its own child process (its own peak RSS), ``chain.repeats`` times after a warm-up;
each link's time is the median. The sets' codes are held against PyTorch's and their audio
against transformers' from the same noise: the fp32 set must give PyTorch's codes, and its
streamed audio must pass the fp32 gate's ``min_stream_snr_db``.

The figures are kept, not re-timed, while everything they depend on is unchanged: the
question's bytes, the bytes of every link each set runs, the params, the timing and runtime
code and the machine (:func:`chain_fingerprint`), and the replies are still on disk.
"""

from __future__ import annotations

import logging
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from omniforge.benchmark.reuse import (
    CHAIN_TIMING,
    FINGERPRINT,
    MEASURED_AT,
    MEASURED_ON,
    WAVS,
    context,
    kept_audio,
    machine,
    wav_digests,
)
from omniforge.benchmark.timing import peak_rss_mb
from omniforge.errors import ArtifactError, ContractError
from omniforge.runtime.token2wav import SAMPLE_RATE

log = logging.getLogger(__name__)

INPUT_RATE = 16_000
# The report's one key when params.yaml builds no component of a link: why nothing was timed.
NOT_MEASURED = "not_measured"
# The voice team's projection, never run (ms): what the measured table stands beside.
PROJECTED_MS = {
    "encoder": "40-60",
    "projection": "2-5",
    "talker_per_code": 9,
    "token2wav": 50,
    "overhead": 10,
    "first_audio": 120,
}
# What fills each link of the fp32 set: a component or assembly of params.yaml, as fp32.
CHAIN_BUILDS = {
    "encoder": "audio_encoder",
    "projection": "projection",
    "talker": "talker_kv",
    "token2wav": "token2wav",
}
FP32_SET = {link: f"{name}/fp32" for link, name in CHAIN_BUILDS.items()}
# What a run of the chain reports per link (ms), as LinkTimes names them.
LINK_FIELDS = (
    "features_ms",
    "encoder_ms",
    "projection_ms",
    "talker_first_code_ms",
    "talker_per_code_ms",
    "first_audio_ms",
    "total_ms",
)


def _median_times(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in LINK_FIELDS}


def bench_chain_torch(params: dict[str, Any], question: str) -> dict[str, Any]:
    """The chain in transformers' modules, PyTorch eager: per-link medians, the codes, the
    waveform and the noise Token2Wav drew (the sets are handed the same)."""
    import torch

    from omniforge.params import Params
    from omniforge.reference import torch_stepper, torch_synthesis
    from omniforge.runtime.features import log_mel_features
    from omniforge.runtime.generation import GenerationConfig, decode_loop
    from omniforge.runtime.token2wav import SynthesisConfig, default_voice
    from omniforge.runtime.wav import read_voice_input
    from omniforge.sources import open_source

    settings = Params.model_validate(params)
    chain = settings.chain
    torch.set_num_threads(settings.benchmark.threads)
    source = open_source(settings.model)
    tower, talker, token2wav = source.audio_tower(), source.talker(), source.token2wav()
    speakers = source.speakers()
    voice = speakers.speakers[default_voice(speakers.speakers)]
    synthesis = SynthesisConfig(**settings.token2wav.settings[chain.setting].model_dump())
    waveform = read_voice_input(Path(question))

    def one_turn() -> dict[str, Any]:
        times: dict[str, Any] = {}
        started = time.perf_counter()
        features = log_mel_features(waveform)
        times["features_ms"] = _ms(started)
        mark = time.perf_counter()
        with torch.inference_mode():
            embeds = tower(
                input_features=torch.from_numpy(features),
                feature_lens=torch.tensor([features.shape[1]]),
            ).last_hidden_state
        times["encoder_ms"] = _ms(mark)  # projection included: it is the tower's tail
        times["projection_ms"] = 0.0
        states = embeds.float().numpy()[None]
        limit = chain.max_codes or 2 * states.shape[1]
        config = GenerationConfig(
            max_new_tokens=limit, code_limit=token2wav.config.dit_config.num_embeds
        )
        # reference.torch_generate_codes' loop, each step's end stamped.
        step, stamps = torch_stepper(talker), []

        def timed(*args: Any) -> np.ndarray:
            out = step(*args)
            stamps.append(time.perf_counter())
            return out

        mark = time.perf_counter()
        result = decode_loop(timed, states, states, 0, config, talker.config.vocab_size, False)
        times["talker_first_code_ms"] = (stamps[0] - mark) * 1000
        gaps = np.diff(stamps) * 1000
        times["talker_per_code_ms"] = float(np.median(gaps)) if gaps.size else 0.0
        codes = result.codes[:, : int(result.lengths[0])]
        mark = time.perf_counter()
        audio, noise = torch_synthesis(token2wav, codes, voice, synthesis)
        times["token2wav_ms"] = _ms(mark)
        # No streaming in transformers: the first audio is the whole reply's.
        times["first_audio_ms"] = times["total_ms"] = _ms(started)
        times["codes"] = codes[0]
        times["waveform"] = audio
        times["noise"] = noise
        return times

    runs = [one_turn() for _ in range(1 + chain.repeats)][1:]
    last = runs[-1]
    report: dict[str, Any] = _median_times(runs)
    report["token2wav_ms"] = statistics.median(run["token2wav_ms"] for run in runs)
    report.update(
        codes=last["codes"],
        waveform=last["waveform"],
        noise=last["noise"],
        input_s=waveform.size / INPUT_RATE,
        peak_rss_mb=peak_rss_mb(),
    )
    return report


def bench_chain_onnx(
    params: dict[str, Any], published: str, names: dict[str, str], question: str, noise: Any
) -> dict[str, Any]:
    """One chain set, as a voice pipeline runs it: loaded (hashes verified), a warm-up turn,
    then timed turns with the codes streamed into Token2Wav from PyTorch's noise."""
    from omniforge.params import Params
    from omniforge.runtime.token2wav import StreamSettings, SynthesisConfig
    from omniforge.runtime.voice import VoicePipeline
    from omniforge.runtime.wav import read_voice_input

    settings = Params.model_validate(params)
    chain = settings.chain
    synthesis = SynthesisConfig(**settings.token2wav.settings[chain.setting].model_dump())
    stream = StreamSettings(**settings.token2wav.stream.model_dump())
    started = time.perf_counter()
    pipeline = VoicePipeline.load(Path(published), names, settings.benchmark.threads)
    load_s = time.perf_counter() - started
    waveform = read_voice_input(Path(question))
    limit = chain.max_codes or None
    # Noise for as many codes as the set may emit; PyTorch's for those it emitted.
    most = limit or 2 * (1 + waveform.size // 640)
    rng = np.random.default_rng(synthesis.seed)
    padded = rng.standard_normal((1, 2 * most, noise.shape[2]), dtype=np.float32)
    given = min(noise.shape[1], padded.shape[1])
    padded[:, :given] = noise[:, :given]

    def turn(codes: int | None) -> Any:
        return pipeline.reply(
            waveform, max_codes=codes, synthesis=synthesis, stream=stream, noise=padded
        )

    turn(4)  # warm-up: every session's first run allocates
    replies = [turn(limit) for _ in range(chain.repeats)]
    last = replies[-1]
    report: dict[str, Any] = _median_times([r.times.as_dict() for r in replies])
    report.update(
        names=pipeline.names,
        load_s=load_s,
        token2wav_chunk_ms=last.times.token2wav_chunk_ms,
        chunks=len(last.chunks),
        audio_s=last.audio_seconds,
        real_time_factor=statistics.median(r.real_time_factor for r in replies),
        codes=last.codes,
        waveform=last.waveform,
        peak_rss_mb=peak_rss_mb(),
    )
    return report


def first_divergence(reference: np.ndarray, candidate: np.ndarray) -> int:
    """The first step where two code sequences differ (-1: none, lengths included)."""
    shared = min(reference.size, candidate.size)
    differs = np.flatnonzero(reference[:shared] != candidate[:shared])
    if differs.size:
        return int(differs[0])
    return -1 if reference.size == candidate.size else shared


def chain_fingerprint(
    params: Any, published: Path, question: Path, sets: dict[str, dict[str, str]]
) -> str:
    """The key of a run's figures: the question's bytes, the files (names, sizes, sha256) of
    every link each set runs, and the run's context (params, timing code, machine)."""
    import hashlib
    import json
    from dataclasses import asdict

    from omniforge.runtime.manifest import load_manifest

    by_name = {entry.name: entry for entry in load_manifest(published).artifacts}
    links: dict[str, dict[str, Any]] = {}
    for name, names in sets.items():
        for link, artifact in names.items():
            if artifact not in by_name:
                raise ArtifactError(
                    f"{published}: the {name} set's {link} {artifact} is not published (was it "
                    "refused? see metrics/publish.json)"
                )
            links.setdefault(name, {})[link] = [asdict(r) for r in by_name[artifact].records()]
    key = {
        "context": context(params, CHAIN_TIMING),
        "question": hashlib.sha256(Path(question).read_bytes()).hexdigest(),
        "sets": sets,
        "links": links,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def benchmark_chain(
    params: Any,
    published: Path,
    question: Path,
    previous: dict[str, Any] | None = None,
    listen: Path | None = None,
) -> dict[str, Any]:
    """The chain's table: PyTorch eager and every chain set, side by side in one run.

    ``previous`` and ``listen``: the stage's last report and the folder of its replies; when
    the fingerprint is unchanged and the replies are still the files the report recorded,
    both are kept (and the fp32 set still checked against today's gate). A build whose
    params.yaml lacks one of the chain's components times nothing: the report is only why
    (``not_measured``)."""
    from omniforge.children import run_in_child
    from omniforge.runtime.token2wav import snr_db
    from omniforge.runtime.voice import fastest_published

    built = {*params.components, *params.assemblies}
    unbuilt = [name for name in CHAIN_BUILDS.values() if name not in built]
    if unbuilt:  # a pipeline built for some components: nothing to chain, and it says so
        reason = (
            f"params.yaml builds no {', '.join(unbuilt)}: the chain runs "
            f"{', '.join(CHAIN_BUILDS.values())} (components and assemblies)"
        )
        log.warning("chain: not measured: %s", reason)
        return {NOT_MEASURED: reason, "waveforms": {}}
    sets = {"fp32": FP32_SET, "fastest": fastest_published(published, params.chain.setting)}
    key = chain_fingerprint(params, published, question, sets)
    replies = None
    if previous and previous.get(FINGERPRINT) == key and listen is not None:
        recorded = previous.get(WAVS)
        replies = kept_audio(listen, recorded) if isinstance(recorded, dict) else None
    if replies is not None and previous is not None:
        log.info("chain: question, links, params, code and machine unchanged: figures kept")
        check_fp32_set(previous["fp32"], params.publish.gates.get("fp32"))
        return {**previous, "waveforms": replies}
    settings = params.as_dict()
    log.info(
        "chain: PyTorch eager, %s setting, %d turns", params.chain.setting, params.chain.repeats
    )
    eager = run_in_child("benchmark of chain (torch)", bench_chain_torch, settings, str(question))
    report: dict[str, Any] = {
        "question": str(question),
        "input_s": eager["input_s"],
        "setting": params.chain.setting,
        "threads": params.benchmark.threads,
        "repeats": params.chain.repeats,
        "projected_ms": PROJECTED_MS,
        MEASURED_AT: datetime.now(UTC).isoformat(timespec="seconds"),
        MEASURED_ON: machine()["cpu"],
        FINGERPRINT: key,
    }
    waveforms = {"torch": eager.pop("waveform")}
    torch_codes = eager.pop("codes")
    noise = eager.pop("noise")
    eager["codes"] = int(torch_codes.size)
    eager["audio_s"] = waveforms["torch"].size / SAMPLE_RATE
    eager["real_time_factor"] = eager["total_ms"] / 1000 / eager["audio_s"]
    report["torch"] = eager
    for name, names in sets.items():
        log.info("chain: set %s (%s)", name, ", ".join(names.values()))
        figures = run_in_child(
            f"benchmark of chain ({name})",
            bench_chain_onnx,
            settings,
            str(published),
            names,
            str(question),
            noise,
        )
        codes = figures.pop("codes")
        waveforms[name] = figures.pop("waveform")
        figures["codes"] = int(codes.size)
        figures["first_divergence_from_torch"] = first_divergence(torch_codes, codes)
        if figures["first_divergence_from_torch"] == -1:
            # The same codes from the same noise: streaming's (and quantization's) cost.
            figures["snr_db_vs_torch"] = snr_db(waveforms["torch"], waveforms[name])
        figures["first_audio_speedup_vs_torch"] = (
            eager["first_audio_ms"] / figures["first_audio_ms"]
        )
        report[name] = figures
    check_fp32_set(report["fp32"], params.publish.gates.get("fp32"))
    report[WAVS] = wav_digests(waveforms, SAMPLE_RATE)
    report["waveforms"] = waveforms
    return report


def check_fp32_set(figures: dict[str, Any], gate: Any) -> None:
    """The fp32 set must give PyTorch's codes, and its streamed reply must pass the fp32
    gate's ``min_stream_snr_db`` as the published Token2Wav's stream does."""
    step = figures["first_divergence_from_torch"]
    if step != -1:
        raise ContractError(
            f"chain fp32: the codes differ from PyTorch's at step {step}: the fp32 links are "
            "not the modules they were exported from"
        )
    floor = None if gate is None else gate.min_stream_snr_db
    snr = figures["snr_db_vs_torch"]
    if floor is not None and snr < floor:
        raise ContractError(
            f"chain fp32: snr_db_vs_torch {snr:.1f} dB fails the gate (>= {floor:g}, "
            "publish.gates.fp32.min_stream_snr_db): the streamed reply is not transformers' audio"
        )


def write_replies(folder: Path, waveforms: dict[str, np.ndarray]) -> None:
    """Each contender's reply as a 24 kHz WAV to listen to, the folder replaced whole."""
    from omniforge.artifacts import atomic_directory
    from omniforge.runtime.wav import write_wav

    with atomic_directory(folder) as tmp:
        for name, waveform in waveforms.items():
            write_wav(tmp / f"{name}.wav", waveform, SAMPLE_RATE)


def render_timeline(path: Path, report: dict[str, Any]) -> None:
    """Where the time to the first audio goes, per contender: one bar of its links (or why
    the chain was not measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if NOT_MEASURED in report:
        figure, axis = plt.subplots(figsize=(9, 1.2))
        axis.axis("off")
        axis.text(0.5, 0.5, f"chain not measured: {report[NOT_MEASURED]}", ha="center", wrap=True)
        _save(figure, path)
        return
    contenders = [name for name in ("torch", "fp32", "fastest") if name in report]
    colours = {
        "features": "#999999",
        "encoder + projection": "#1f77b4",
        "talker, first code": "#ff7f0e",
        "talker + Token2Wav to the first chunk": "#2ca02c",
        "talker, every code": "#ffbb78",
        "Token2Wav, whole reply": "#d62728",
    }
    figure, axis = plt.subplots(figsize=(9, 1.8 + 0.8 * len(contenders)))
    for row, name in enumerate(contenders):
        times = report[name]
        if name == "torch":
            talker = times["first_audio_ms"] - times["token2wav_ms"] - times["features_ms"]
            talker -= times["encoder_ms"]
            parts = [
                ("features", times["features_ms"]),
                ("encoder + projection", times["encoder_ms"]),
                ("talker, every code", talker),
                ("Token2Wav, whole reply", times["token2wav_ms"]),
            ]
        else:
            head = times["features_ms"] + times["encoder_ms"] + times["projection_ms"]
            parts = [
                ("features", times["features_ms"]),
                ("encoder + projection", times["encoder_ms"] + times["projection_ms"]),
                ("talker, first code", times["talker_first_code_ms"]),
                (
                    "talker + Token2Wav to the first chunk",
                    times["first_audio_ms"] - head - times["talker_first_code_ms"],
                ),
            ]
        left = 0.0
        for label, width in parts:
            width = max(width, 0.0) / 1000
            axis.barh(row, width, left=left, color=colours[label], label=label)
            left += width
        axis.text(left, row, f"  {times['first_audio_ms'] / 1000:.2f} s", va="center")
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    axis.legend(
        unique.values(),
        unique.keys(),
        fontsize=7,
        ncol=3,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35),
        frameon=False,
    )
    axis.set_yticks(range(len(contenders)), [_label(report, n) for n in contenders], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("seconds from the end of the question to the first audio")
    axis.set_title(f"time to first audio, {report['input_s']:.1f} s question ({report['setting']})")
    figure.tight_layout()
    _save(figure, path)


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_suffix(".tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(path)


def _label(report: dict[str, Any], name: str) -> str:
    if name == "torch":
        return "PyTorch eager"
    return f"{name}: " + ", ".join(n.split("/")[-1] for n in report[name]["names"].values())


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
