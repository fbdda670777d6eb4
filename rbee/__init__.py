"""rbee: every GPU and CPU you own, on many machines, as one OpenAI-compatible API."""

from kernel import __version__

__all__ = ["__version__"]
