"""spa-bff's benchmark harness (driven by bench/run). Standard library only (Python 3.11)."""
