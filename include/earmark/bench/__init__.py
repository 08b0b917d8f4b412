"""Benchmarks of Earmark's stages; run them as modules (``python -m earmark.bench.gpu_stage``)."""
