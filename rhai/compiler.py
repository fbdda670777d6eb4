"""Compiles a resolved program into nested Python closures.

The work is split by what is compiled: :mod:`rhai.compile_expr` (values, variables,
operators, access), :mod:`rhai.compile_call` (calls), :mod:`rhai.compile_assign`
(assignments) and :mod:`rhai.compile_stmt` (statements), on the shared helpers of
:mod:`rhai.compile_base`; :mod:`rhai.fastpath` compiles simple predicates to Python source.
"""

from __future__ import annotations

from .compile_assign import AssignCompiler
from .compile_base import has_calls, may_ctl
from .compile_call import CallCompiler
from .compile_expr import ExprCompiler
from .compile_stmt import StmtCompiler
from .fastpath import make_fast_pred
from .nodes import Block, FnDef
from .resolver import FnScope
from .runtime import ScriptFn


class Compiler(ExprCompiler, CallCompiler, AssignCompiler, StmtCompiler):
    def __init__(self, publish_globals: bool = False, typed: frozenset[str] = frozenset()) -> None:
        self.publish_globals = publish_globals
        self.typed_methods = typed

    def compile_fndef(self, fd: FnDef, sf: ScriptFn | None = None) -> ScriptFn:
        """Compile a script function or closure (into ``sf`` when given, so that calls
        compiled earlier already point at it)."""
        if sf is None:
            sf = ScriptFn(fd.name, fd.params, fd.pos)
        assert fd.body is not None
        sf.nslots = fd.nslots
        sf.pad = [None] * (fd.nslots - 2 - len(fd.params))
        sf.copy_params = [v.slot for v in fd.param_vars if v.mutated]
        sf.cap_slots = [inner.slot for _, inner in fd.captures]
        sf.may_ctl = may_ctl(fd.body)
        sf.calls = has_calls(fd.body)
        sf.body = self.cs(fd.body)
        if fd.is_closure:
            sf.fast = make_fast_pred(fd)
        fd.compiled = sf
        return sf

    def compile_main(self, body: Block, scope: FnScope) -> ScriptFn:
        """The top-level statements, as a function of no parameters."""
        main = ScriptFn("<main>", [], (1, 1))
        main.nslots = scope.nslots
        main.pad = [None] * (scope.nslots - 2)
        main.body = self.cs(body)
        return main


__all__ = ["Compiler"]
