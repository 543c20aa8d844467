"""The version of mdpo (recorded in the files it writes)."""

__version__ = "0.1.0"
