"""Fault injection for alphac's own tests: make chosen candidates fail in chosen ways.

``ALPHAC_FAULT`` holds comma-separated ``KIND@ID`` entries, e.g. ``nan@2,oom@4,kill@5``:

- ``nan``: the candidate's weights become NaN, so training diverges (the real NaN/Inf check);
- ``raise``: the candidate's forward raises a RuntimeError;
- ``oom``: its forward raises ``torch.OutOfMemoryError`` (out of memory, simulated on the CPU);
- ``kill``: its worker process kills itself with SIGKILL, once (the retry then succeeds);
- ``killtwice``: its worker kills itself on every attempt (the candidate ends failed);
- ``synthesis``: the mutation that would make individual ID fails (a synthesis timeout).

Nothing reads it but the search's tests; it is documented so that nobody sets it by accident.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

ENV = "ALPHAC_FAULT"


def injected(kind: str, ident: int) -> bool:
    """Whether ``ALPHAC_FAULT`` asks for fault ``kind`` at individual ``ident``."""
    entries = os.environ.get(ENV, "")
    return f"{kind}@{ident}" in {e.strip() for e in entries.split(",") if e.strip()}


def apply_to_candidate(model: Any, ident: int, folder: Path | None) -> None:
    """Break ``model`` (or its worker) as ``ALPHAC_FAULT`` asks; nothing when it is unset."""
    if ENV not in os.environ:
        return
    import torch

    if injected("nan", ident):
        with torch.no_grad():
            for param in model.parameters():
                param.fill_(float("nan"))
    if injected("raise", ident):
        model.register_forward_pre_hook(_raise(RuntimeError("injected failure in forward")))
    if injected("oom", ident):
        model.register_forward_pre_hook(_raise(torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 20.00 GiB (injected)")))
    marker = None if folder is None else folder / ".alphac-fault-killed"
    if injected("killtwice", ident) or (injected("kill", ident) and marker is not None
                                        and not marker.exists()):
        if marker is not None:
            marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)


def _raise(error: BaseException) -> Any:
    def hook(module: Any, args: Any) -> None:
        raise error

    return hook
