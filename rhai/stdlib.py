"""The standard library: importing this module registers every builtin.

The functions live in three parts: :mod:`rhai.lib_core` (generic, function pointers, math,
conversions), :mod:`rhai.lib_strings` (functions shared by strings, arrays and maps, and the
string functions) and :mod:`rhai.lib_arrays` (arrays and object maps). Each registers its
builtins in :data:`rhai.runtime.BUILTINS` when imported.
"""

from __future__ import annotations

from . import lib_arrays, lib_core, lib_strings

__all__ = ["lib_arrays", "lib_core", "lib_strings"]
