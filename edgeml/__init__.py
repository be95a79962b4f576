"""edgeml: efficient-AI methods from research to edge devices."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeml")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
