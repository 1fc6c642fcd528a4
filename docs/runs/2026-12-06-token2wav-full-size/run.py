"""Token2Wav at full size (transformers' default config = the 7B checkpoint's, synthetic
weights), through the pipeline's own library calls: export, simplify, int8 quantize, the
validate stage's synthesis check, then the benchmark stage's whole-synthesis timing beside
PyTorch eager, in one run. Peak RSS of each step is printed (each build step in its own
process, as DVC runs the stages).

    .venv/bin/python docs/runs/2026-12-06-token2wav-full-size/run.py build   WORK [GRAPH]
    .venv/bin/python docs/runs/2026-12-06-token2wav-full-size/run.py validate WORK
    .venv/bin/python docs/runs/2026-12-06-token2wav-full-size/run.py bench   WORK
    .venv/bin/python docs/runs/2026-12-06-token2wav-full-size/run.py graphs  WORK

WORK is a scratch folder (about 3 GB); figures go to WORK/*.json and are quoted in NOTES.md.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from omniforge.artifacts import variant_dir, write_json
from omniforge.params import parse_params

PARAMS = {
    "model": {"preset": "qwen2.5-omni-7b"},
    "components": ["token2wav_conditioning", "token2wav_dit", "token2wav_vocoder"],
    "quantize": {"int8": {"method": "int8", "reduce_range": True}},
    "talker_kv": {"hybrid_prefill": "int8", "hybrid_decode": "int8", "speedup_reference": "int8"},
    "token2wav": {"bench_codes": 100, "bench_repeats": 3, "validate_codes": 100},
}


def peak_rss_gb() -> float:
    """This process's peak or its largest child's (simplify runs onnxsim in one)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1e6


def build(work: Path) -> None:
    """Each step of each graph in a process of its own, as DVC runs the stages: a step's peak
    RSS is its own (in one process, memory the export held is never given back)."""
    import subprocess

    only = sys.argv[3] if len(sys.argv) > 3 else None
    for name in parse_params(PARAMS).components:
        if only and name != only:
            continue
        for step in ("export", "simplify", "quantize"):
            subprocess.run([sys.executable, __file__, "step", str(work), name, step], check=True)


def step(work: Path) -> None:
    """One step (export, simplify or quantize int8) of one graph: ``step WORK GRAPH STEP``."""
    from omniforge.components import get_component

    name, what = sys.argv[3], sys.argv[4]
    params = parse_params(PARAMS)
    component = get_component(name)
    exported = work / "export" / name
    fp32 = variant_dir(work / "variants", name, "fp32")
    started = time.perf_counter()
    if what == "export":
        from omniforge.passes.export import export_component
        from omniforge.sources import open_source

        export_component(component, open_source(params.model), exported, params.export)
    elif what == "simplify":
        from omniforge.passes.simplify import simplify_artifact

        simplify_artifact(exported, fp32, params.simplify, component)
    else:
        from omniforge.passes.quantize import quantize_artifact

        int8 = variant_dir(work / "variants", name, "int8")
        quantize_artifact(fp32, int8, "int8", params.quantize)
    seconds = time.perf_counter() - started
    print(f"{name} {what}: {seconds:.0f} s, peak RSS {peak_rss_gb():.2f} GB", flush=True)


def validate(work: Path) -> None:
    from omniforge.components import get_assembly
    from omniforge.sources import open_source
    from omniforge.sources.token2wav import from_config
    from omniforge.validate.synthesis import SynthesisCheck

    params = parse_params(PARAMS)
    source = open_source(params.model)
    check = SynthesisCheck(
        source, params.token2wav, from_config(source.configs.token2wav, "7b"), params.validate_.seed
    )
    print(f"torch references: peak RSS {peak_rss_gb():.2f} GB")
    assembly = get_assembly("token2wav")
    out = {}
    for variant in ("fp32", "int8"):
        out[variant] = check.check(variant, assembly.graph_dirs(variant, params, work / "variants"))
        print(variant, json.dumps({k: v for k, v in out[variant].items() if k != "synthesis"}))
    write_json(work / "validate.json", out)
    print(f"validate: peak RSS {peak_rss_gb():.2f} GB")


def bench(work: Path) -> None:
    from omniforge.benchmark.synthesis import benchmark_token2wav, render_spectrograms

    params = parse_params(PARAMS)
    report = benchmark_token2wav(params, "token2wav", work / "variants", work / "listen")
    render_spectrograms(work / "mel.png", report.pop("spectrograms"), "token2wav, full size")
    write_json(work / "benchmark.json", report)


def graphs(work: Path) -> None:
    """Each graph the solve runs, alone, beside its PyTorch module, 2 threads: one DiT
    evaluation (2 rows: with guidance; 1 row: without) and the vocoder, over the benchmark's
    200 frames (2 s of audio). Each contender in a block of its own (alternating runs made
    torch's and onnxruntime's spinning thread pools slow each other): median of 5 after a
    warm-up, blocks in the order torch, fp32, int8."""
    import functools
    import statistics

    import numpy as np
    import onnxruntime as ort
    import torch

    from omniforge.components import get_component
    from omniforge.sources import open_source

    params = parse_params(PARAMS)
    source = open_source(params.model)
    torch.set_num_threads(2)
    frames = 2 * params.token2wav.bench_codes
    cases = {"token2wav_dit": [(2, frames), (1, frames)], "token2wav_vocoder": [(1, frames)]}
    out: dict[str, dict[str, float]] = {}
    for name, shapes in cases.items():
        component = get_component(name)
        module = component.build_module(source)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        sessions = {
            variant: ort.InferenceSession(
                str(variant_dir(work / "variants", name, variant) / "model.onnx"), options
            )
            for variant in ("fp32", "int8")
        }
        for rows, length in shapes:
            feeds = component.make_inputs(source.configs, rows, length, seed=0)
            tensors = [torch.from_numpy(np.asarray(v)) for v in feeds.values()]
            runs = {"torch": functools.partial(module, *tensors)}
            runs |= {v: functools.partial(s.run, None, feeds) for v, s in sessions.items()}
            times: dict[str, list[float]] = {who: [] for who in runs}
            with torch.inference_mode():
                for who, run in runs.items():
                    for _ in range(6):  # the first run is the warm-up
                        started = time.perf_counter()
                        run()
                        times[who].append(time.perf_counter() - started)
            label = f"{name} rows={rows} frames={length}"
            out[label] = {who: 1e3 * statistics.median(t[1:]) for who, t in times.items()}
            print(label, {who: round(ms) for who, ms in out[label].items()}, flush=True)
    write_json(work / "graphs.json", out)


if __name__ == "__main__":
    commands = {
        "build": build,
        "step": step,
        "validate": validate,
        "bench": bench,
        "graphs": graphs,
    }
    commands[sys.argv[1]](Path(sys.argv[2]))
