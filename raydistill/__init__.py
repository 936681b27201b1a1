"""raydistill: reproduce and stress-test image dataset distillation (gradient shift + class-wise K-means)."""

__version__ = "0.1.0"
