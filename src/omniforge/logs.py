"""Logging for stage entry points: omniforge's progress on stderr, third-party chatter quieted."""

from __future__ import annotations

import logging
import os
import warnings


def setup_logging(level: int = logging.INFO) -> None:
    # The root logger stays at WARNING: onnxruntime's quantizer and the exporter log
    # every node at INFO through it.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("omniforge").setLevel(level)
    # "torchvision is not installed" warnings from the exporter's op registry.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    # Read by transformers when it is imported: setting it here keeps this function from
    # importing transformers (and torch) into processes that only run onnxruntime.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
