"""Choosing the device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``."""

from __future__ import annotations

import torch

from alphac.errors import DeviceError

__all__ = ["DeviceError", "resolve_device"]  # DeviceError lived here first; still importable


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``; DeviceError for an unknown name or CUDA without a GPU."""
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {str(device)!r}: alphac runs on cpu or cuda",
                          hint="pass --device auto (CUDA when present, else CPU), cpu, cuda or "
                          "cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name} was asked for but CUDA is not available on this machine "
                f"(PyTorch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})",
                hint="use --device cpu (or auto), or install a CUDA build of PyTorch",
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"there is no {resolved}: this machine has {torch.cuda.device_count()} GPU(s)",
                hint=f"pick an index below {torch.cuda.device_count()}, or --device cuda",
            )
    return resolved
