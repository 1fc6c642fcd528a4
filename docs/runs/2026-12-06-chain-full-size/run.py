"""The voice chain at full size (synthetic weights of the 7B checkpoint's shapes: 32-layer
audio encoder, 24-layer talker, the default Token2Wav), through the library's own calls.

    .venv/bin/python docs/runs/2026-12-06-chain-full-size/run.py build   WORK
    .venv/bin/python docs/runs/2026-12-06-chain-full-size/run.py publish WORK TALKER T2W
    .venv/bin/python docs/runs/2026-12-06-chain-full-size/run.py bench   WORK

``build`` exports the audio encoder and the projection (fp32, int8) and checks the encoder's
chunked path against transformers'; ``publish`` makes one published set of them with a
full-size fused talker's variants (TALKER: a folder of talker_fused/<variant>/) and Token2Wav's
parts (T2W: a folder of token2wav_*/<variant>/), built by the pipeline's passes elsewhere
(docs/runs/2026-12-06-token2wav-full-size); ``bench`` runs the chain benchmark's two
contenders on data/question.wav: PyTorch eager and the fastest set, each in its own process.
Figures go to WORK/*.json and are quoted in NOTES.md.
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
    "components": ["audio_encoder", "projection"],
    "validate": {
        "shapes": {
            "audio_encoder": [{"batch": 2, "length": 200}, {"batch": 3, "length": 77}],
            "projection": [{"batch": 2, "length": 64}, {"batch": 3, "length": 31}],
        }
    },
    "benchmark": {"lengths": {"audio_encoder": [200], "projection": [100]}},
    "quantize": {"int8": {"method": "int8", "reduce_range": True}},
    "talker_kv": {"hybrid_prefill": "int8", "hybrid_decode": "int8", "speedup_reference": "int8"},
    "chain": {"setting": "fast", "max_codes": 100, "repeats": 2},
}
# The fastest published set at full size: every link's int8, the hybrid talker, int8 DiT.
FASTEST = {
    "encoder": "audio_encoder/int8",
    "projection": "projection/int8",
    "talker": "talker_fused/hybrid",
    "token2wav": "token2wav/int8",
}
QUESTION = Path(__file__).parents[3] / "data" / "question.wav"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def build(work: Path) -> None:
    from omniforge.artifacts import MODEL
    from omniforge.components import get_component
    from omniforge.passes.export import export_component
    from omniforge.passes.quantize import quantize_artifact
    from omniforge.passes.simplify import simplify_artifact
    from omniforge.sources import open_source
    from omniforge.validate.encoder import EncoderCheck

    params = parse_params(PARAMS)
    source = open_source(params.model)
    for name in params.components:
        component = get_component(name)
        started = time.perf_counter()
        exported = export_component(component, source, work / "export" / name, params.export)
        fp32 = simplify_artifact(
            exported,
            variant_dir(work / "variants", name, "fp32"),
            params.simplify,
            component,
        )
        quantize_artifact(
            fp32, variant_dir(work / "variants", name, "int8"), "int8", params.quantize
        )
        seconds = time.perf_counter() - started
        print(f"{name}: built in {seconds:.0f} s, peak RSS {peak_rss_gb():.2f} GB", flush=True)
    check = EncoderCheck(source, params.validate_.seed)
    figures = {
        variant: check.check(
            variant, {MODEL: variant_dir(work / "variants", "audio_encoder", variant)}
        )
        for variant in ("fp32", "int8")
    }
    write_json(work / "encoder_validate.json", figures)
    print(json.dumps(figures, indent=2), f"peak RSS {peak_rss_gb():.2f} GB")


def publish(work: Path, talker: Path, token2wav: Path) -> None:
    from omniforge.artifacts import DECODE, PREFILL, graph_files, graphs_bytes
    from omniforge.components import get_assembly, get_component
    from omniforge.params import Gate, Params
    from omniforge.publish import Candidate
    from omniforge.publish import publish as publish_set

    def candidate(component: str, variant: str, graphs: dict[str, Path], kind: str) -> Candidate:
        return Candidate(
            component=component,
            variant=variant,
            graphs=graphs,
            graph_kind=kind,
            parity={},
            benchmark={"size": graphs_bytes(graphs)},
            files=graph_files(graphs),
        )

    candidates = []
    for name in ("audio_encoder", "projection"):
        kind = get_component(name)
        for variant in ("fp32", "int8"):
            graphs = kind.graph_dirs(variant, Params(), work / "variants")
            candidates.append(candidate(name, variant, graphs, kind.graph_kind))
    pair = {
        PREFILL: talker / "talker_fused" / "int8",
        DECODE: talker / "talker_fused" / "int4-block128",
    }
    candidates.append(candidate("talker_fused", "hybrid", pair, "kv-cache"))
    assembly = get_assembly("token2wav")
    graphs = assembly.graph_dirs("int8", Params(), token2wav)
    candidates.append(candidate("token2wav", "int8", graphs, assembly.graph_kind))
    gates = {variant: Gate() for variant in ("fp32", "int8", "hybrid")}
    publish_set(candidates, gates, work / "published", {}, {})
    print(f"published {len(candidates)} artifacts in {work / 'published'}")


def bench(work: Path) -> None:
    from omniforge.benchmark.chain import (
        bench_chain_onnx,
        bench_chain_torch,
        first_divergence,
        render_timeline,
        write_replies,
    )
    from omniforge.benchmark.reuse import machine
    from omniforge.children import run_in_child

    params = parse_params(PARAMS).as_dict()
    probes = [probe(work)]
    eager = run_in_child("chain (torch)", bench_chain_torch, params, str(QUESTION))
    torch_codes, noise = eager.pop("codes"), eager.pop("noise")
    waveforms = {"torch": eager.pop("waveform")}
    fastest = run_in_child(
        "chain (fastest)",
        bench_chain_onnx,
        params,
        str(work / "published"),
        FASTEST,
        str(QUESTION),
        noise,
    )
    codes = fastest.pop("codes")
    waveforms["fastest"] = fastest.pop("waveform")
    eager["codes"], fastest["codes"] = int(torch_codes.size), int(codes.size)
    eager["audio_s"] = waveforms["torch"].size / 24_000
    eager["real_time_factor"] = eager["total_ms"] / 1000 / eager["audio_s"]
    fastest["first_divergence_from_torch"] = first_divergence(torch_codes, codes)
    fastest["first_audio_speedup_vs_torch"] = eager["first_audio_ms"] / fastest["first_audio_ms"]
    probes.append(probe(work))
    report = {
        "probes": probes,
        "floors_ms": floors(work, max(p["int8_gemm_multiply_adds_per_s"] for p in probes)),
        "question": str(QUESTION),
        "input_s": eager["input_s"],
        "setting": PARAMS["chain"]["setting"],
        "machine": machine(),
        "torch": eager,
        "fastest": fastest,
    }
    write_json(work / "chain.json", report)
    write_replies(work / "listen", waveforms)
    render_timeline(work / "chain_timeline.png", report)
    print(json.dumps(report, indent=2, default=str))


def probe(work: Path) -> dict[str, float]:
    """The machine's memory bandwidth and int8 GEMM rate now, on the benchmark's 2 threads."""
    from omniforge.benchmark.bandwidth import BandwidthProbe
    from omniforge.benchmark.compute import Int8GemmProbe

    bandwidth = BandwidthProbe(2, 1 << 30).measure()
    gemm = Int8GemmProbe(2, 128).measure()
    return {
        "read_bytes_per_s": bandwidth["read_bytes_per_s"],
        "int8_gemm_multiply_adds_per_s": gemm,
    }


def floors(work: Path, rate: float) -> dict[str, float]:
    """What each link's weight multiply-adds cost at the run's best int8 GEMM rate, for the
    work before the first audio: the encoder over the question, the talker's prompt, and the
    DiT over the first stream window (48 + 24 frames, 16 evaluations of one row at ``fast``)."""
    from omniforge.benchmark.compute import weight_multiply_adds
    from omniforge.runtime.audio_encoder import encoded_frames
    from omniforge.runtime.features import feature_frames
    from omniforge.runtime.wav import read_voice_input

    published = work / "published"
    positions = encoded_frames(feature_frames(read_voice_input(QUESTION).size), 200)
    prompt = positions // 2
    encoder = weight_multiply_adds(published / "audio_encoder" / "int8" / "model.onnx")
    prefill = weight_multiply_adds(published / "talker_fused" / "hybrid" / "prefill" / "model.onnx")
    dit = weight_multiply_adds(published / "token2wav" / "int8" / "dit" / "model.onnx", ("rows",))
    return {
        "encoder": encoder * positions / rate * 1000,
        "talker_prompt": prefill * prompt / rate * 1000,
        "dit_first_window": dit * (48 + 24) * 16 / rate * 1000,
        "encoder_positions": positions,
        "prompt_states": prompt,
    }


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    if command == "build":
        build(folder)
    elif command == "publish":
        publish(folder, Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        bench(folder)
