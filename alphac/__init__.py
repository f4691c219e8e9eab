"""alphac: a compiler for neural architectures (property-guided architecture search over torch.fx).

``alphac.optimize(model, target=..., ...)`` runs the search from Python (see
:func:`alphac.search.api.optimize`); the ``alphac`` command line does the same from a shell.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "optimize"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import alphac` stays cheap (no torch) for the CLI's --help and --version.
    if name == "optimize":
        from alphac.search.api import optimize

        return optimize
    raise AttributeError(f"module 'alphac' has no attribute {name!r}")
