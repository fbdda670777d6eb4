"""The public engine API: :class:`Engine` and :class:`AST`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from . import stdlib  # noqa: F401  (registers the builtins)
from .compiler import Compiler
from .errors import (
    NOPOS,
    EvalError,
    ExitSignal,
    Fail,
    LimitExceeded,
    ParseError,
    RhaiError,
    to_eval_error,
)  # fmt: skip
from .nodes import Block, FnDef, Let
from .parse_expr import literal_value
from .parser import Parser
from .resolver import Resolver
from .runtime import BUILTINS, UNBOUND, VARIADIC, Ctl, CtlExc, Ctx, ScriptFn, make_frame, run_frame
from .values import deep_copy, from_python, type_of

log = logging.getLogger("rhai")

DEFAULT_MAX_OPERATIONS = 1_000_000
DEFAULT_MAX_CALL_LEVELS = 64
DEFAULT_MAX_EXPR_DEPTH = 64
DEFAULT_MAX_STRING_SIZE = 1_000_000
DEFAULT_MAX_ARRAY_SIZE = 100_000
DEFAULT_MAX_MAP_SIZE = 100_000
DEFAULT_MAX_VARIABLES = 1_000

_AS_IS = frozenset({dict, list, str, float, bool, type(None)})


class AST:
    """A compiled script: its top-level statements and its functions."""

    def __init__(self, source: str, main: ScriptFn, fns: dict[tuple[str, int], ScriptFn],
                 defs: dict[tuple[str, int], FnDef],
                 static_globals: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.source = source
        self._main = main
        self._fns = fns
        self._defs = defs
        # top-level constants with literal values: what `global::NAME` sees in `call_fn`
        self._static_globals = static_globals or {}
        # names of typed methods (`fn int.name()`), stored as ("i64.name", arity)
        self._typed: frozenset[str] = frozenset()

    def has_fn(self, name: str, arity: int | None = None) -> bool:
        """Whether the script defines ``fn name(...)`` (with ``arity`` parameters if given)."""
        if arity is None:
            return any(k[0] == name for k in self._fns)
        return (name, arity) in self._fns

    def fn_params(self, name: str, arity: int | None = None) -> list[str]:
        """Parameter names of script function ``name`` (the first defined one when several
        arities exist and ``arity`` is not given). Raises KeyError if there is none."""
        for (n, a), sf in self._fns.items():
            if n == name and (arity is None or a == arity):
                return list(sf.params)
        raise KeyError(name)

    def functions(self) -> list[tuple[str, int]]:
        """``(name, arity)`` of every script function, in definition order."""
        return list(self._fns)


class Engine:
    """A sandboxed Rhai engine. A limit of 0 means unlimited. ``max_time`` (seconds, not in
    Rhai itself) stops a call that runs longer, whatever its operation count, with a
    :class:`LimitExceeded` ("Script timed out ...")."""

    def __init__(
        self,
        max_operations: int = DEFAULT_MAX_OPERATIONS,
        max_call_levels: int = DEFAULT_MAX_CALL_LEVELS,
        max_expr_depth: int = DEFAULT_MAX_EXPR_DEPTH,
        max_string_size: int = DEFAULT_MAX_STRING_SIZE,
        max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        max_variables: int = DEFAULT_MAX_VARIABLES,
        max_time: float = 0.0,
    ) -> None:
        self.max_operations = max_operations
        self.max_call_levels = max_call_levels
        self.max_expr_depth = max_expr_depth
        self.max_string_size = max_string_size
        self.max_array_size = max_array_size
        self.max_map_size = max_map_size
        self.max_variables = max_variables
        # seconds of wall-clock time per eval/call_fn (0: none): past it, LimitExceeded
        self.max_time = max_time
        self._host: dict[tuple[str, int], Callable[..., Any]] = {}
        # Called with the operation count every 1,024 operations (as Rhai's on_progress); a
        # value other than None stops the script (LimitExceeded "Script terminated ...").
        self.on_progress: Callable[[int], Any] | None = None
        self.on_print: Callable[[str], Any] | None = lambda s: log.info("%s", s)
        self.on_debug: Callable[[str], Any] | None = lambda s: log.debug("%s", s)

    # -- host functions ------------------------------------------------------------
    def register_fn(self, name: str, fn: Callable[..., Any], arity: int | None = None) -> Engine:
        """Register a host function, callable as ``name(a, b)`` or ``a.name(b)``.

        The arity is read from the signature unless given; registering the same name with
        another arity overloads it. Host functions receive and return plain Python values.
        """
        if not name.isidentifier():
            raise ValueError(f"invalid function name: {name!r}")
        arities: list[int]
        if arity is not None:
            arities = [arity]
        else:
            try:
                sig = inspect.signature(fn)
            except (TypeError, ValueError):
                raise ValueError(f"cannot read the signature of {fn!r}; pass arity=") from None
            params = list(sig.parameters.values())
            pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            required = [p for p in pos if p.default is p.empty]
            if any(p.kind == p.VAR_POSITIONAL for p in params):
                arities = list(range(len(required), 17))
            else:
                arities = list(range(len(required), len(pos) + 1))
        # copy on write: compiled call sites cache what a name resolves to, keyed on the
        # identity of this dict, so a new registration must give a new dict
        host = dict(self._host)
        for a in arities:
            host[(name, a)] = fn
        self._host = host
        return self

    # -- compiling and running -----------------------------------------------------
    def compile(self, src: str) -> AST:
        """Parse and compile a script. Raises :class:`ParseError`."""
        if not isinstance(src, str):
            raise TypeError("script source must be a str")
        try:
            parser = Parser(src, self.max_expr_depth, self.max_string_size,
                            self.max_array_size, self.max_map_size)  # fmt: skip
            body, defs = parser.parse_program()
            names = {fd.name for fd in defs.values()}
            resolver = Resolver(names, _known_methods() | {k[0] for k in self._host})
            scope = resolver.program(body, defs)
            # as in Rhai, top-level constants reach `global::` only in scripts with functions
            publish = bool(defs) or resolver.has_closures
            typed = frozenset(fd.name for k, fd in defs.items() if k[0] != fd.name)
            comp = Compiler(publish, typed)
            fns: dict[tuple[str, int], ScriptFn] = {}
            for key, fd in defs.items():
                fns[key] = ScriptFn(fd.name, fd.params, fd.pos)
            for key, fd in defs.items():
                comp.compile_fndef(fd, fns[key])
            main = comp.compile_main(body, scope)
        except ParseError:
            raise
        except RecursionError:
            raise ParseError("The script nests too deeply", NOPOS) from None
        except MemoryError:
            raise ParseError("The script is too large", NOPOS) from None
        except Exception as e:  # pragma: no cover - defensive
            raise ParseError(f"Internal parser error: {type(e).__name__}: {e}", NOPOS) from e
        ast = AST(src, main, fns, defs, static_globals(body) if publish else None)
        ast._typed = typed
        return ast

    def eval(self, src: str) -> Any:
        """Compile and run a script; returns the value of its last statement."""
        return self.eval_ast(self.compile(src))

    def eval_ast(self, ast: AST) -> Any:
        """Run the top-level statements of a compiled script."""
        c = Ctx(self, ast._fns, None, ast._typed)
        main = ast._main

        def run() -> Any:
            fr = make_frame(c, main, [], UNBOUND, ())
            try:
                r = main.body(fr)
            except CtlExc as e:
                r = e.ctl
            if type(r) is Ctl:
                r = r.value
            return r

        return _guard(run)

    def call_fn(self, ast: AST, name: str, *args: Any, max_time: float | None = None) -> Any:
        """Call script function ``name`` with ``args``.

        The top-level statements of the script are *not* run: script functions cannot
        see top-level variables anyway, so only their side effects would be lost.
        ``max_time`` replaces the engine's wall-clock limit for this call.
        """
        fns = ast._fns
        sf = fns.get((name, len(args)))
        try:
            c = Ctx(self, fns, ast._static_globals, ast._typed, max_time)
            # containers are passed as they are (their items are read lazily, and a script
            # that mutates a parameter works on a copy); other values are checked
            for a in args:
                if type(a) not in _AS_IS:
                    fr = [c, UNBOUND, *[x if type(x) in _AS_IS else from_python(x) for x in args]]
                    break
            else:
                fr = [c, UNBOUND, *args]
            if sf is None:
                types = ", ".join(type_of(a) for a in fr[2:])
                raise EvalError(f"Function not found: {name} ({types})", NOPOS)
            # the frame as make_frame builds it, without the call
            if sf.pad:
                fr.extend(sf.pad)
            for i in sf.copy_params:
                fr[i] = deep_copy(fr[i], c)
            return run_frame(c, sf, fr, sf.pos)
        except RhaiError:
            raise
        except BaseException as e:
            return _guard_error(e)


def _guard(run: Callable[[], Any]) -> Any:
    """Run and make sure only the engine's own error types escape."""
    try:
        return run()
    except RhaiError:
        raise
    except BaseException as e:
        return _guard_error(e)


def _guard_error(e: BaseException) -> Any:
    try:
        raise e
    except Fail as e:
        raise to_eval_error(e, NOPOS) from None
    except RecursionError:
        raise LimitExceeded("Stack overflow: the script nests too deeply", NOPOS) from None
    except MemoryError:
        raise LimitExceeded("Out of memory", NOPOS) from None
    except CtlExc as e:
        return e.ctl.value
    except ExitSignal as e:  # exit(value): the script's answer
        return e.value
    except Exception as e:
        raise EvalError(f"Internal error: {type(e).__name__}: {e}", NOPOS) from e
    raise AssertionError("unreachable")  # pragma: no cover


_KNOWN: list[frozenset[str]] = []


def _known_methods() -> frozenset[str]:
    """Names of the builtins (registered when :mod:`rhai.stdlib` was imported)."""
    if not _KNOWN:
        _KNOWN.append(frozenset({k[0] for k in BUILTINS} | set(VARIADIC)))
    return _KNOWN[0]


def static_globals(body: Block) -> dict[str, Any]:
    """The top-level constants whose values are literals."""
    out: dict[str, Any] = {}
    for s in body.stmts:
        if type(s) is Let and s.is_global and s.init is not None:
            ok, value = literal_value(s.init)
            if ok:
                out[s.name] = value
    return out
