"""The competitor methods of Tables I / II, one module each: a plug-in folder.

A method is a ``MethodParams`` subclass (``suite.methods.base``) decorated with ``@register``: its
fields are what a ``compare.methods`` entry of that ``kind`` takes (typed and validated on
load), its class variables tell the comparison stage what it needs, and ``run(job)`` trains
or compresses the model and returns its metrics. Every module in this package is imported on
first use, so adding a method is one new file here plus its test (see CONTRIBUTING.md);
``caenet methods`` lists what is registered.
"""

from __future__ import annotations

import typing

from pydantic import ValidationError

from suite import plugins
from suite.config import CompareConfig, one_line
from suite.methods.base import MethodParams

_METHODS: dict[str, type[MethodParams]] = {}
HELPERS = {"base", "job", "comparison_stage"}  # modules of this package that hold no method (suite.plugins)


def register(cls: type[MethodParams]) -> type[MethodParams]:
    """Class decorator: make ``cls`` the parameters and ``run`` of ``kind: <its Literal>``."""
    kinds = typing.get_args(cls.model_fields["kind"].annotation)
    if len(kinds) != 1 or not cls.model_fields["kind"].is_required():
        raise TypeError(f"{cls.__name__}: declare `kind: Literal['<name>']` with no default")
    kind = kinds[0]
    if kind in _METHODS and _METHODS[kind] is not cls:
        raise TypeError(f"method kind {kind!r} registered twice ({_METHODS[kind].__name__}, {cls.__name__})")
    if not callable(getattr(cls, "run", None)):
        raise TypeError(f"{cls.__name__}: a method needs run(self, job) -> metrics")
    _METHODS[kind] = cls
    return cls


def methods() -> dict[str, type[MethodParams]]:
    """kind -> parameter class, every method module imported."""
    plugins.discover(__name__)
    return dict(_METHODS)


def summary(cls: type[MethodParams]) -> str:
    """The first line of a method's docstring (``caenet methods``)."""
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def parse_method(entry, index: int) -> MethodParams:
    """One ``compare.methods`` entry as its kind's class; ValueError in one line otherwise."""
    known = methods()
    if not isinstance(entry, dict):
        raise ValueError(f"[{index}] must be a mapping with 'name' and 'kind', got {type(entry).__name__}")
    label = repr(entry.get("name", index))
    kind = entry.get("kind")
    if kind not in known:
        raise ValueError(f"[{label}]: unknown kind {kind!r}; known: {', '.join(sorted(known))} (`caenet methods` describes them)")
    try:
        return known[kind].model_validate(entry)
    except ValidationError as exc:
        raise ValueError(one_line(exc, prefix=f"[{label}]")) from None


def parse_methods(compare: CompareConfig) -> list[MethodParams]:
    """``compare.methods`` as their kinds' classes, each ``of`` naming an earlier row and each
    kind's own ``check`` passed; ValueError in one line otherwise."""
    parsed, seen = [], {"baseline", "caenet"}
    for index, entry in enumerate(compare.methods):
        method = entry if isinstance(entry, MethodParams) else parse_method(entry.model_dump(exclude_unset=True), index)
        method.check(compare)
        if not method.fresh and method.of not in seen:
            raise ValueError(f"method {method.name!r}: 'of: {method.of}' names no earlier method (have {sorted(seen)})")
        seen.add(method.name)
        parsed.append(method)
    return parsed
