"""A sandboxed, pure-Python implementation of the Rhai scripting language.

See README.md in this package for the supported language, the API and the limits.
"""

from .engine import AST, Engine
from .errors import EvalError, LimitExceeded, ParseError, RhaiError, ThrownError
from .values import TIMED_OUT, Char, FnPtr, Range, StepRange, type_of

__all__ = [
    "AST",
    "TIMED_OUT",
    "Char",
    "Engine",
    "EvalError",
    "FnPtr",
    "LimitExceeded",
    "ParseError",
    "Range",
    "RhaiError",
    "StepRange",
    "ThrownError",
    "type_of",
]  # fmt: skip
__version__ = "0.1.0"
