"""One registry and ``create_model(name, ...)`` for every architecture (the timm idea).

Every factory takes the input geometry and class count as keywords, so a stage builds any
model for any dataset with ``create_model(name, **geometry(info), **extra)``.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from suite import plugins

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn: Callable[..., nn.Module]):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    plugins.discover("suite.models")
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    plugins.discover("suite.models")
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None
    return factory(**kwargs)


def geometry(info) -> dict:
    """The keywords every factory takes, from a ``DatasetInfo``."""
    return {"in_channels": info.channels, "image_size": info.size, "num_classes": info.num_classes}
