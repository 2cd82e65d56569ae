"""wfe_flaskui: the wfcore web dashboard, as a mountable Flask blueprint and ``wfe ui``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Dashboard",
    "EngineBridge",
    "create_app",
    "serve",
    "workflow_svg",
]

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .app import Dashboard, create_app
    from .bridge import EngineBridge
    from .graph import workflow_svg
    from .server import serve

# Workers load this package as a plugin (for the ``wfe ui`` command); Flask is only
# imported when the dashboard itself is used.
_LAZY = {
    "Dashboard": "app",
    "create_app": "app",
    "EngineBridge": "bridge",
    "workflow_svg": "graph",
    "serve": "server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wfe_flaskui' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
