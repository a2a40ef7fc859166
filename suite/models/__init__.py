"""Model zoo: every architecture is built through ``create_model(name, ...)``."""

from suite.models.registry import create_model, geometry, list_models, register

HELPERS = {"registry"}  # every other module here is a plug-in (suite.plugins): its @register-ed factories
__all__ = ["create_model", "geometry", "list_models", "register"]
