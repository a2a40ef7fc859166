"""``caenet models``: the architectures of the model registry (``suite.models``)."""

from __future__ import annotations

from suite.models import list_models

ORDER = 80
HELP = 'list the registered model architectures'


def add_parser(sub) -> None:
    sub.add_parser("models", help=HELP,
                   description="Names usable as baseline.model, autoencoder.model and compare.methods[*].model.").set_defaults(func=main)


def main(args) -> int:
    print("\n".join(list_models()))
    return 0
