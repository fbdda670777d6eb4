"""rbee: every GPU and CPU you own, on many machines, as one OpenAI-compatible API."""

__version__ = "0.1.0"
