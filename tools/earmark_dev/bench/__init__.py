"""Benchmarks of Earmark's stages, run as modules (``python -m earmark_dev.bench.gpu_stage``)."""
