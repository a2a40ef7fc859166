"""Model zoo: every architecture is built through ``create_model(name, ...)``."""

from suite.models import branchy as _branchy  # noqa: F401  (registers)
from suite.models import cae as _cae  # noqa: F401  (registers)
from suite.models import cifar as _cifar  # noqa: F401  (registers)
from suite.models import classic as _classic  # noqa: F401  (registers)
from suite.models import resized as _resized  # noqa: F401  (registers)
from suite.models import subflow as _subflow  # noqa: F401  (registers)
from suite.models.registry import create_model, geometry, list_models, register

__all__ = ["create_model", "geometry", "list_models", "register"]
