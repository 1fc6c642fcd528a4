"""The benchmark stage: every variant and PyTorch eager on the same shapes, in one run.

Per-shape latency for every component (:mod:`~omniforge.benchmark.latency`); a ``kv-cache``
graph also gets its decode benchmark (:mod:`~omniforge.benchmark.decode`). Each contender
runs in a child process of its own (:mod:`~omniforge.children`), so this package
imports nothing heavy: an onnxruntime child's peak RSS must not include torch.
"""
