"""The quantize pass: dynamic int8 and int4 MatMulNBits with onnxruntime's quantizers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from omniforge.artifacts import (
    DATA_FILENAME,
    MODEL_FILENAME,
    atomic_directory,
    check_artifact,
    model_path,
)
from omniforge.errors import ArtifactError, ParamsError
from omniforge.params import Int4Params, Int8Params, QuantizeParams

log = logging.getLogger(__name__)


def _int8(source: Path, target: Path, params: Int8Params) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model_input=source,
        model_output=target,
        weight_type=QuantType.QInt8,
        per_channel=params.per_channel,
        reduce_range=params.reduce_range,
        use_external_data_format=True,
        # Only weights (constant B) are quantized; activations stay dynamic.
        extra_options={"MatMulConstBOnly": True},
    )


def _int4(source: Path, target: Path, params: Int4Params) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)),
        bits=4,
        block_size=params.block_size,
        is_symmetric=params.symmetric,
        accuracy_level=params.accuracy_level,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=True)


SCHEMES: dict[str, Callable[[Path, Path, QuantizeParams], None]] = {
    "int8": lambda src, dst, p: _int8(src, dst, p.int8),
    "int4": lambda src, dst, p: _int4(src, dst, p.int4),
}


def quantize_artifact(src_dir: Path, out_dir: Path, scheme: str, params: QuantizeParams) -> Path:
    """Quantize ``src_dir``'s graph with ``scheme`` into ``out_dir`` (replaced atomically)."""
    if scheme not in SCHEMES:
        raise ParamsError(f"unknown quantization scheme '{scheme}' (known: {sorted(SCHEMES)})")
    source = model_path(src_dir)
    started = time.perf_counter()
    log.info("quantizing %s to %s", source, scheme)
    with atomic_directory(out_dir) as tmp:
        target = tmp / MODEL_FILENAME
        SCHEMES[scheme](source, target, params)
        # Both writers name the data file after the model file: model.onnx.data.
        if not (tmp / DATA_FILENAME).is_file():
            raise ArtifactError(f"{scheme}: the quantizer wrote no external data file")
        check_artifact(tmp)
    log.info("quantized %s to %s in %.1fs", source, scheme, time.perf_counter() - started)
    return Path(out_dir)
