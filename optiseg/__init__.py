"""optiseg: search the IoU-latency Pareto front of real-time segmentation networks on your edge device."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("optiseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
