"""The shared kernel: what every app may use and that imports no app and no models.

Secrets (``kernel.secrets``), where data and configuration live (``kernel.paths``),
logging that never writes a secret (``kernel.logs``), the async-to-ORM bridge of the
request path (``kernel.aio``) and the domain error base (``kernel.errors``). The hive
agent, which runs with no database, may import ``secrets``, ``paths``, ``logs`` and
``errors`` (``aio`` needs Django). Nothing here imports ``rbee`` or an app: the
contracts in ``pyproject.toml`` check it.
"""

__version__ = "0.1.0"
