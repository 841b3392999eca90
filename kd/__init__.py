"""kdbench: knowledge-distillation benchmark for single-image super-resolution."""

__version__ = "0.1.0"
