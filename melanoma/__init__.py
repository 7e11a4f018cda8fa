"""Melanoma detection with uncertainty quantification."""
__version__ = "0.1.0"
