"""Logging for stage entry points: omniforge's progress on stderr, third-party chatter quieted."""

from __future__ import annotations

import logging
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
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass
