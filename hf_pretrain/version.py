"""The package version (one place: the package face and the output markers read it)."""

__version__ = "0.1.0"
