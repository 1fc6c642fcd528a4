"""BigVGAN at full size (transformers' default Token2Wav config, synthetic weights), timed three
ways in one process, alternately so that the shared machine's drift falls on all three alike:
PyTorch eager, the ONNX graph as exported (1-D convolutions), and the graph after the conv2d
pass (``passes/conv2d.py``). Also: where each ONNX graph's time goes (onnxruntime's profiler).

    .venv/bin/python docs/runs/2026-12-06-vocoder-conv2d/run.py build WORK
    .venv/bin/python docs/runs/2026-12-06-vocoder-conv2d/run.py bench WORK [FRAMES] [REPEATS]

WORK is a scratch folder (~1.5 GB). Figures go to WORK/vocoder.json and are quoted in NOTES.md.
"""

from __future__ import annotations

import collections
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from omniforge.params import parse_params

PARAMS = {"model": {"preset": "qwen2.5-omni-7b"}, "components": ["token2wav_vocoder"]}
NAME = "token2wav_vocoder"


def build(work: Path) -> None:
    from omniforge.components import get_component
    from omniforge.passes.export import export_component
    from omniforge.passes.simplify import simplify_artifact
    from omniforge.sources import open_source

    params = parse_params(PARAMS)
    component = get_component(NAME)
    exported = export_component(
        component, open_source(params.model), work / "export", params.export
    )

    class AsExported(type(component)):
        convs_as_2d = False

    simplify_artifact(exported, work / "conv1d", params.simplify, AsExported())
    simplify_artifact(exported, work / "conv2d", params.simplify, component)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


def profile(session_path: Path, mel: np.ndarray, threads: int) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(session_path.parent / "profile")
    session = ort.InferenceSession(str(session_path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"mel": mel})
    events = json.loads(Path(session.end_profiling()).read_text())
    spent: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += event["dur"] / 1e3
    return dict(spent.most_common(8))


def bench(work: Path, frames: int, repeats: int, threads: int = 2) -> None:
    import onnxruntime as ort
    import torch

    from omniforge.benchmark.reuse import machine
    from omniforge.runtime.token2wav import snr_db
    from omniforge.sources import open_source

    torch.set_num_threads(threads)
    params = parse_params(PARAMS)
    bigvgan = open_source(params.model).token2wav().code2wav_bigvgan_model
    mel = (np.random.default_rng(0).standard_normal((1, 80, frames)) * 2.0 - 2.0).astype(np.float32)
    runners = {}
    with torch.no_grad():
        reference = bigvgan(torch.from_numpy(mel)).numpy().reshape(-1)
        runners["pytorch"] = lambda: bigvgan(torch.from_numpy(mel))
    outputs = {}
    for name in ("conv1d", "conv2d"):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(work / name / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        outputs[name] = session.run(None, {"mel": mel})[0].reshape(-1)
        runners[name] = lambda session=session: session.run(None, {"mel": mel})
    times = {name: [] for name in runners}
    with torch.no_grad():
        for run in runners.values():
            run()  # warm-up
        for _ in range(repeats):
            for name, run in runners.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
    audio_s = frames * 240 / 24_000
    report = {
        "machine": machine(),
        "frames": frames,
        "audio_s": audio_s,
        "threads": threads,
        "repeats": repeats,
        "median_s": {name: statistics.median(t) for name, t in times.items()},
        "min_s": {name: min(t) for name, t in times.items()},
        "snr_db_vs_pytorch": {name: snr_db(reference, out) for name, out in outputs.items()},
        "profile_ms": {name: profile(work / name / "model.onnx", mel, threads) for name in outputs},
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    median = report["median_s"]
    report["conv2d_speedup_vs_conv1d"] = median["conv1d"] / median["conv2d"]
    report["conv2d_speedup_vs_pytorch"] = median["pytorch"] / median["conv2d"]
    (work / "vocoder.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    step, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    if step == "build":
        build(work)
    else:
        frames = int(sys.argv[3]) if len(sys.argv) > 3 else 100
        repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
        bench(work, frames, repeats)
