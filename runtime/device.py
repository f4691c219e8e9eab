"""Choosing the device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``."""

from __future__ import annotations

import torch

from alphac.errors import UserError


class DeviceError(UserError):
    """A ``--device`` that does not exist on this machine."""


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
        raise DeviceError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "--device cuda was asked for but CUDA is not available on this machine",
                hint="use --device cpu (or auto), or install a CUDA build of PyTorch",
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"there is no {resolved}: this machine has {torch.cuda.device_count()} GPU(s)",
                hint="pick an existing GPU index",
            )
    return resolved
