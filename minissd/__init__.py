"""minissd: the SSD object detector written by hand on NumPy (CPU) and CuPy (GPU)."""

__version__ = "0.1.0"
