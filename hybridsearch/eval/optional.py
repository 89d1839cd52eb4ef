"""Evaluation dependencies a core install leaves out (the ``eval`` extra)."""

from __future__ import annotations

import importlib
from types import ModuleType

from hybridsearch.errors import ConfigurationError

INSTALL_HINT = "pip install 'hybridsearch[eval]'"


def import_eval_dependency(module: str, purpose: str) -> ModuleType:
    """Import ``module``, or say which extra brings it when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigurationError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed; {INSTALL_HINT}"
        ) from None
