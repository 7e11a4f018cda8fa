"""SYNTHETIC miniature replicas of the eleven skin-lesion dataset releases (being split into
submodules; the code is in :mod:`melanoma.data.synthetic.draw` for now)."""

from melanoma.data.synthetic.draw import BASE_COUNTS, GENERATOR, requested_counts, write_replicas

__all__ = ["BASE_COUNTS", "GENERATOR", "requested_counts", "write_replicas"]
