#!/usr/bin/env python
"""Load time and memory of omniforge.runtime.load_talker on one artifact folder.

Measures whichever omniforge PYTHONPATH puts first, each repetition in a fresh process:

    PYTHONPATH=/work/bench24/old/src /work/main/.venv/bin/python /work/bench24/measure_load.py \
        [--folder /work/bench24/published/talker_fused/hybrid] [--repeats 5] [--threads 2]

Modes run per repetition (each its own child process, after one discarded warm-up run of each
so the files are in the page cache):
  load     : import omniforge.runtime; RSS; time load_talker(folder, threads=N); RSS; ru_maxrss
  verify   : import omniforge.runtime; time omniforge.runtime.manifest.locate(folder) only
  sessions : onnxruntime alone (no omniforge, no hashing): time opening prefill/ and decode/
             model.onnx with intra_op=N, inter_op=1; RSS and ru_maxrss
Prints one JSON object: median/min/max of each figure, plus the raw samples.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

DEFAULT_FOLDER = "/work/bench24/published/talker_fused/hybrid"

CHILD = r"""
import json, os, resource, sys, time
import psutil
mode, folder, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
proc = psutil.Process()
mb = lambda b: b / 2**20
out = {"mode": mode}
cpu = lambda: sum(os.times()[:2])  # user+sys of this process (onnxruntime threads included)
if mode in ("load", "verify"):
    t = time.perf_counter()
    import omniforge, omniforge.runtime
    out["import_s"] = time.perf_counter() - t
    out["omniforge_file"] = omniforge.__file__
    out["rss_after_import_mb"] = mb(proc.memory_info().rss)
    out["peak_rss_after_import_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if mode == "load":
        t, c = time.perf_counter(), cpu()
        talker = omniforge.runtime.load_talker(folder, threads=threads)
        out["seconds"] = time.perf_counter() - t
        out["cpu_seconds"] = cpu() - c
        out["num_layers"] = getattr(talker, "num_layers", None)
    else:
        from omniforge.runtime.manifest import locate
        t, c = time.perf_counter(), cpu()
        locate(folder)
        out["seconds"] = time.perf_counter() - t
        out["cpu_seconds"] = cpu() - c
else:
    import onnxruntime as ort
    out["rss_after_import_mb"] = mb(proc.memory_info().rss)
    t, c = time.perf_counter(), cpu()
    sessions = []
    for role in ("decode", "prefill"):
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        o.log_severity_level = 3
        sessions.append(ort.InferenceSession(os.path.join(folder, role, "model.onnx"), o,
                                             providers=["CPUExecutionProvider"]))
    out["seconds"] = time.perf_counter() - t
    out["cpu_seconds"] = cpu() - c
out["rss_after_load_mb"] = mb(proc.memory_info().rss)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def run_child(mode: str, folder: str, threads: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, folder, str(threads)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    line = [row for row in done.stdout.splitlines() if row.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=DEFAULT_FOLDER)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="load,verify,sessions")
    args = parser.parse_args()
    modes = args.modes.split(",")
    start_load = os.getloadavg()
    samples: dict[str, list[dict]] = {m: [] for m in modes}
    for mode in modes:  # warm-up: page cache, .pyc files
        run_child(mode, args.folder, args.threads)
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits every mode alike
        for mode in modes:
            samples[mode].append(run_child(mode, args.folder, args.threads))
    result: dict = {
        "folder": args.folder,
        "pythonpath": os.environ.get("PYTHONPATH"),
        "python": sys.executable,
        "repeats": args.repeats,
        "threads": args.threads,
        "loadavg_at_start": start_load,
        "loadavg_at_end": os.getloadavg(),
    }
    if "load" in samples:
        s = samples["load"]
        result["omniforge_file"] = s[0]["omniforge_file"]
        result["load_seconds"] = summary([x["seconds"] for x in s])
        result["load_cpu_seconds"] = summary([x["cpu_seconds"] for x in s])
        result["peak_rss_mb"] = summary([x["peak_rss_mb"] for x in s])
        result["rss_after_load_mb"] = summary([x["rss_after_load_mb"] for x in s])
        result["rss_after_import_mb"] = summary([x["rss_after_import_mb"] for x in s])
        result["import_seconds"] = summary([x["import_s"] for x in s])
    if "verify" in samples:
        result["verify_only_seconds"] = summary([x["seconds"] for x in samples["verify"]])
        result["verify_only_cpu_seconds"] = summary([x["cpu_seconds"] for x in samples["verify"]])
    if "sessions" in samples:
        s = samples["sessions"]
        result["ort_sessions_only_seconds"] = summary([x["seconds"] for x in s])
        result["ort_sessions_only_cpu_seconds"] = summary([x["cpu_seconds"] for x in s])
        result["ort_sessions_only_peak_rss_mb"] = summary([x["peak_rss_mb"] for x in s])
        result["ort_sessions_only_rss_after_load_mb"] = summary([x["rss_after_load_mb"] for x in s])
    result["samples"] = samples
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
