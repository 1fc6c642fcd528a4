"""Token2Wav timed as a voice pipeline runs it: whole syntheses, offline and streamed.

One seeded utterance (``token2wav.bench_codes`` codes, the default speaker). PyTorch eager
(transformers' ``Qwen2_5OmniToken2WavModel.forward``) synthesises it once per setting in a
child of its own; its noise is handed to every variant's child, so the spectrograms compare
like with like. Per variant and setting: the offline synthesis time and its real-time factor,
the stream's (codes pushed one at a time, as the talker emits them), the time from the first
code to the first audio, each chunk's latency, the speedup over PyTorch at the same setting,
and compute floors, offline and streamed: the DiT's weight multiply-adds for every
evaluation over the int8 GEMM rate, plus the vocoder's convolution multiply-adds over the
fp32 GEMM rate (it is fp32 in every variant), both rates measured in the same child. A
stream's floor counts the frames it computed, its context windows' included. Attention's
products and the elementwise work are left out, so each floor is a lower bound.
"""

from __future__ import annotations

import logging
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.benchmark.reuse import MEASURED_AT, MEASURED_ON
from omniforge.benchmark.timing import peak_rss_mb
from omniforge.runtime.token2wav import default_voice

if TYPE_CHECKING:
    from omniforge.params import Params

log = logging.getLogger(__name__)


def utterance(num_embeds: int, codes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_embeds, (1, codes))


def bench_synthesis_torch(
    model_params: dict[str, Any], params_dict: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Child entry point: transformers' synthesis per setting; seconds, waveform, the noise."""
    import torch

    from omniforge.params import ModelParams, parse_params
    from omniforge.sources import open_source

    params = parse_params(params_dict)
    settings = params.token2wav
    torch.set_num_threads(params.benchmark.threads)
    source = open_source(ModelParams(**model_params))
    speakers = source.speakers()
    voice = speakers.speakers[default_voice(speakers.speakers)]
    codes = utterance(speakers.num_embeds, settings.bench_codes, seed)
    model = source.token2wav()
    mel_dim = voice.reference_mel.shape[1]
    out: dict[str, Any] = {"settings": {}, "waveforms": {}}
    for name, setting in settings.settings.items():
        seconds = []
        for _ in range(settings.bench_repeats):
            torch.manual_seed(seed)
            noise = torch.randn([1, 2 * codes.shape[1], mel_dim]).numpy()
            torch.manual_seed(seed)
            started = time.perf_counter()
            with torch.inference_mode():
                waveform = model(
                    torch.from_numpy(codes),
                    torch.from_numpy(voice.cond)[None],
                    torch.from_numpy(voice.reference_mel)[None],
                    **setting.model_dump(),
                )
            seconds.append(time.perf_counter() - started)
        out["settings"][name] = {"offline_s": statistics.median(seconds)}
        out["waveforms"][name] = waveform.numpy().reshape(-1)
        out["noise"] = noise
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def bench_synthesis_onnx(
    params_dict: dict[str, Any], graphs: dict[str, str], noise: np.ndarray, seed: int
) -> dict[str, Any]:
    """Child entry point (numpy and onnxruntime only): one variant's syntheses per setting."""
    from omniforge.benchmark.compute import (
        Fp32GemmProbe,
        Int8GemmProbe,
        conv_multiply_adds_per_frame,
        weight_multiply_adds,
    )
    from omniforge.params import parse_params
    from omniforge.runtime.session import share_thread_pool
    from omniforge.runtime.speak import speak
    from omniforge.runtime.token2wav import (
        SAMPLE_RATE,
        StreamSettings,
        SynthesisConfig,
        open_unverified_token2wav,
    )

    params = parse_params(params_dict)
    settings, threads = params.token2wav, params.benchmark.threads
    share_thread_pool(threads)
    t2w = open_unverified_token2wav({role: Path(d) for role, d in graphs.items()}, threads)
    codes = utterance(t2w.num_embeds, settings.bench_codes, seed)
    stream = StreamSettings(**settings.stream.model_dump())
    frames = 2 * codes.shape[1]
    gemm, fp32_gemm = Int8GemmProbe(threads, frames), Fp32GemmProbe(threads, frames)
    # Per frame, the transformer; per row (once per evaluation), the time MLP: left out.
    dit_macs = weight_multiply_adds(Path(graphs["dit"]) / "model.onnx", ("rows",))
    vocoder_macs = conv_multiply_adds_per_frame(Path(graphs["vocoder"]) / "model.onnx")
    audio_s = codes.shape[1] * 480 / SAMPLE_RATE
    out: dict[str, Any] = {"settings": {}, "waveforms": {}}
    for name, setting in settings.settings.items():
        config = SynthesisConfig(**setting.model_dump())
        offline, streamed, first = [], [], []
        chunks_ms: list[float] = []
        for _ in range(settings.bench_repeats):
            spoken = speak(t2w, codes, None, config, noise)
            offline.append(spoken.seconds)
            gemm.measure()
            fp32_gemm.measure()
            spoken_stream, chunk_times, work = timed_stream(t2w, codes, config, stream, noise)
            streamed.append(spoken_stream.seconds)
            first.append(spoken_stream.first_audio_seconds)
            chunks_ms = [1e3 * t for t in chunk_times]
        out["settings"][name] = {
            "offline_s": statistics.median(offline),
            "offline_real_time_factor": statistics.median(offline) / audio_s,
            "stream_s": statistics.median(streamed),
            "stream_real_time_factor": statistics.median(streamed) / audio_s,
            "time_to_first_audio_ms": 1e3 * statistics.median(first),
            "chunk_latency_ms": chunks_ms,
            "dit_evaluations": config.dit_evaluations,
            "dit_rows": 2 if config.guided else 1,
            "stream_solved_frames": work[0],
            "stream_vocoded_frames": work[1],
        }
        out["waveforms"][name] = spoken.waveform
        out["waveforms"][f"{name}_stream"] = spoken_stream.waveform
    # Every setting's floor at the best rates of the whole run: a rate probed while the host
    # was busy would raise the floor of the setting timed then.
    dit_frame_s = dit_macs / gemm.best  # one frame through one DiT row, at the floor
    vocoder_frame_s = vocoder_macs / fp32_gemm.best
    for timing in out["settings"].values():
        row_evaluations = timing["dit_rows"] * timing["dit_evaluations"]
        timing["dit_floor_s"] = frames * row_evaluations * dit_frame_s
        timing["dit_floor_real_time_factor"] = timing["dit_floor_s"] / audio_s
        offline_s = timing["dit_floor_s"] + frames * vocoder_frame_s
        timing["floor_real_time_factor"] = offline_s / audio_s
        stream_s = (
            timing["stream_solved_frames"] * row_evaluations * dit_frame_s
            + timing["stream_vocoded_frames"] * vocoder_frame_s
        )
        timing["stream_floor_real_time_factor"] = stream_s / audio_s
    out["audio_s"] = audio_s
    out["int8_gemm_gmac_per_s"] = gemm.best / 1e9
    out["fp32_gemm_gmac_per_s"] = fp32_gemm.best / 1e9
    out["dit_weight_multiply_adds_per_frame"] = dit_macs
    out["vocoder_multiply_adds_per_frame"] = vocoder_macs
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def timed_stream(t2w: Any, codes: np.ndarray, config: Any, settings: Any, noise: np.ndarray) -> Any:
    """The stream with codes pushed one at a time; each chunk's latency (seconds from the
    push that completed it, or from the finish, to its audio); the frames the stream's DiT
    solves and its vocoder runs saw."""
    from omniforge.runtime.speak import Spoken
    from omniforge.runtime.token2wav import Token2WavStream

    started = time.perf_counter()
    streaming = Token2WavStream(t2w, None, config, settings, noise)
    chunks, latencies, first = [], [], None
    for code in codes[0]:
        pushed = time.perf_counter()
        ready = streaming.push([code])
        if ready:
            latencies.append(time.perf_counter() - pushed)
            first = first if first is not None else time.perf_counter() - started
        chunks += ready
    finishing = time.perf_counter()
    ready = streaming.finish()
    latencies += [time.perf_counter() - finishing] if ready else []
    chunks += ready
    seconds = time.perf_counter() - started
    spoken = Spoken(
        np.concatenate(chunks), seconds, seconds if first is None else first, len(chunks)
    )
    return spoken, latencies, (streaming.solved_frames, streaming.vocoded_frames)


def kept_wavs(listen_dir: Path, who: str, entry: Any) -> dict[str, np.ndarray] | None:
    """The WAVs a previous run wrote for ``who`` (``<who>-<name>.wav``), by name, if each is
    still the file whose sha256 its report ``entry`` recorded under ``wavs``; else None."""
    from omniforge.benchmark.reuse import WAVS, kept_audio

    recorded = entry.get(WAVS) if isinstance(entry, dict) else None
    if not isinstance(recorded, dict):
        return None
    audio = kept_audio(listen_dir, {f"{who}-{name}": digest for name, digest in recorded.items()})
    return None if audio is None else {name: audio[f"{who}-{name}"] for name in recorded}


def benchmark_token2wav(
    params: Params,
    name: str,
    variants_root: Path,
    listen_dir: Path,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """PyTorch eager, then every variant, each in a child; WAVs of each written to
    ``listen_dir`` (replaced whole). The report's ``plot`` holds each chunk's latency (the
    last repeat's) and ``spectrograms`` the waveforms the mel plot shows (popped by the stage
    before the report is written).

    ``previous``: the stage's last report. A variant whose fingerprint (its graphs' bytes, the
    synthesis params, the code, the machine: :mod:`.reuse`) is unchanged and whose WAVs, and
    PyTorch's, are still the files it recorded in ``listen_dir`` keeps its figures and audio;
    PyTorch is timed again whenever any variant is, so every ratio is measured side by side.
    """
    from omniforge.artifacts import atomic_directory, graph_files, graphs_bytes, records_as_dicts
    from omniforge.benchmark.reuse import (
        FINGERPRINT,
        SYNTHESIS_TIMING,
        WAVS,
        context,
        fingerprint,
        kept,
        wav_digests,
    )
    from omniforge.children import run_in_child
    from omniforge.components import get_assembly
    from omniforge.params import DEFAULT_SETTING, FP32
    from omniforge.runtime.token2wav import SAMPLE_RATE
    from omniforge.runtime.wav import write_wav

    assembly = get_assembly(name)
    seed = params.validate_.seed
    settings = params.token2wav
    previous = previous or {}
    run_context = context(params, SYNTHESIS_TIMING)
    variants = assembly.variants(params)
    graphs = {v: assembly.graph_dirs(v, params, variants_root) for v in variants}
    files = {v: records_as_dicts(graph_files(graphs[v])) for v in variants}
    keys = {v: fingerprint(run_context, v, files[v], None) for v in variants}
    compare_torch = params.benchmark.compare_torch
    # A variant's speedups were measured beside PyTorch's audio: without it, nothing is kept.
    torch_audio = kept_wavs(listen_dir, "torch", previous.get("torch")) if compare_torch else {}
    waveforms: dict[str, dict[str, np.ndarray]] = {}
    for variant in variants:
        entry = kept(previous, variant, keys[variant])
        audio = kept_wavs(listen_dir, variant, entry)
        if entry is not None and audio is not None and torch_audio is not None:
            waveforms[variant] = audio
    stale = [v for v in variants if v not in waveforms]
    torch_report: dict[str, Any] = {}
    noise = None
    if compare_torch and not stale and torch_audio:
        log.info("%s: every variant unchanged: its figures and PyTorch's are kept", name)
        torch_report, waveforms["torch"] = previous["torch"], torch_audio
    elif compare_torch:
        log.info("%s: PyTorch eager, %d settings", name, len(settings.settings))
        torch_report = run_in_child(
            f"benchmark of {name} (torch)",
            bench_synthesis_torch,
            params.model.model_dump(),
            params.as_dict(),
            seed,
        )
        waveforms["torch"] = torch_report.pop("waveforms")
        torch_report[WAVS] = wav_digests(waveforms["torch"], SAMPLE_RATE)
        noise = torch_report.pop("noise")
    if noise is None:  # the same noise shape, drawn without torch
        from omniforge.sources import open_source

        mel_dim = open_source(params.model).configs.token2wav.dit_config.mel_dim
        noise = np.random.default_rng(seed).standard_normal(
            (1, 2 * settings.bench_codes, mel_dim), dtype=np.float32
        )
    report: dict[str, Any] = {
        "threads": params.benchmark.threads,
        "batch": 1,
        "codes": settings.bench_codes,
    }
    if torch_report:
        report["torch"] = torch_report
    for variant in variants:
        if variant not in stale:
            log.info("%s: %s unchanged (bytes, params, code, machine): figures kept", name, variant)
            report[variant] = previous[variant]
            continue
        log.info("%s: timing %s", name, variant)
        figures = run_in_child(
            f"benchmark of {name}-{variant}",
            bench_synthesis_onnx,
            params.as_dict(),
            {role: str(d) for role, d in graphs[variant].items()},
            noise,
            seed,
        )
        waveforms[variant] = figures.pop("waveforms")
        figures[WAVS] = wav_digests(waveforms[variant], SAMPLE_RATE)
        for setting, timing in figures["settings"].items():
            if torch_report:
                torch_s = torch_report["settings"][setting]["offline_s"]
                timing["speedup_vs_torch"] = torch_s / timing["offline_s"]
        default = figures["settings"][DEFAULT_SETTING]
        # The headline: transformers' default setting, where PyTorch is timed too.
        figures["synthesis_real_time_factor"] = default["offline_real_time_factor"]
        figures["stream_real_time_factor"] = default["stream_real_time_factor"]
        figures["time_to_first_audio_ms"] = default["time_to_first_audio_ms"]
        if "speedup_vs_torch" in default:
            figures["synthesis_speedup_vs_torch"] = default["speedup_vs_torch"]
        figures["size"] = graphs_bytes(graphs[variant])
        figures["files"] = files[variant]
        figures[FINGERPRINT] = keys[variant]
        figures[MEASURED_AT] = datetime.now(UTC).isoformat(timespec="seconds")
        figures[MEASURED_ON] = run_context["machine"]["cpu"]
        report[variant] = figures
    for timing in torch_report.get("settings", {}).values():
        timing["offline_real_time_factor"] = timing["offline_s"] / report[FP32]["audio_s"]
    with atomic_directory(Path(listen_dir)) as tmp:
        for who, by_setting in waveforms.items():
            for setting, waveform in by_setting.items():
                write_wav(tmp / f"{who}-{setting}.wav", waveform, SAMPLE_RATE)
    chunk_ms = {
        variant: report[variant]["settings"][DEFAULT_SETTING]["chunk_latency_ms"]
        for variant in variants
    }
    report["plot"] = [
        {"chunk": i + 1, **{f"{v}_p50_ms": ms[i] for v, ms in chunk_ms.items() if i < len(ms)}}
        for i in range(max(map(len, chunk_ms.values())))
    ]
    report["plot_x"] = "chunk"
    report["spectrograms"] = {
        **({"PyTorch eager": waveforms["torch"][DEFAULT_SETTING]} if "torch" in waveforms else {}),
        "ONNX fp32 offline": waveforms[FP32][DEFAULT_SETTING],
        "ONNX fp32 streamed": waveforms[FP32][f"{DEFAULT_SETTING}_stream"],
    }
    return report


def render_spectrograms(path: Path, waveforms: dict[str, np.ndarray], title: str) -> None:
    """Log-mel spectrograms of the same utterance, one above the other (atomic write)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from omniforge.runtime.audio import HOP, log_mel_db

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mels = {label: log_mel_db(samples) for label, samples in waveforms.items()}
    top = max(mel.max() for mel in mels.values())
    figure, axes = plt.subplots(len(mels), 1, figsize=(9, 2.4 * len(mels)), dpi=100, sharex=True)
    for axis, (label, mel) in zip(axes, mels.items(), strict=True):
        seconds = mel.shape[1] * HOP / 24_000
        image = axis.imshow(
            mel,
            origin="lower",
            aspect="auto",
            vmin=top - 80,
            vmax=top,
            cmap="magma",
            extent=(0, seconds, 0, mel.shape[0]),
        )
        axis.set_title(label, fontsize="small")
        axis.set_ylabel("mel band")
    axes[-1].set_xlabel("time (s)")
    figure.colorbar(image, ax=axes, label="dB", shrink=0.8)
    figure.suptitle(title)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    figure.savefig(tmp, metadata={"Software": None})
    plt.close(figure)
    tmp.replace(path)
