"""``caenet methods``: the competitor kinds ``compare.methods`` takes, with their keys."""

from __future__ import annotations

from suite.methods import methods, summary
from suite.methods.base import MethodParams

ORDER = 90
HELP = 'list the competitor methods compare.methods takes, with their keys'


def add_parser(sub) -> None:
    sub.add_parser("methods", help=HELP,
                   description="One line per kind (suite/methods/<kind>.py), then the keys an entry of that kind "
                   "takes besides name, kind, of and train, with their defaults.").set_defaults(func=main)


def describe(kind: str, cls: type[MethodParams]) -> str:
    common = set(MethodParams.model_fields)
    keys = []
    for name, field in cls.model_fields.items():
        if name in common:
            continue
        keys.append(f"{name} (required)" if field.is_required() else f"{name}={field.default!r}")
    return f"{kind:15} {summary(cls)}" + (f"\n{'':15} keys: {', '.join(keys)}" if keys else "")


def main(args) -> int:
    print("\n".join(describe(kind, cls) for kind, cls in sorted(methods().items())))
    return 0
