"""The graph passes, one file each: export, simplify, quantize."""
