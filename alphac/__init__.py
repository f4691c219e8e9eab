"""alphac: a compiler for neural architectures (property-guided architecture search over torch.fx)."""

from __future__ import annotations

__version__ = "0.1.0"
