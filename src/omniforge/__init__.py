"""omniforge: reproducible, vetted ONNX artifacts for the Qwen2.5-Omni talker and projection."""

__version__ = "0.1.0"
