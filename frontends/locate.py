"""Point at the line of the user's code that made an import, a build or a trace fail."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import torch

import alphac

# Code of torch and of alphac's own packages is never "the user's line".
_LIBRARY_DIRS = tuple(
    str(Path(p).resolve().parent) for p in (torch.__file__, alphac.__file__, __file__)
)


def _is_library(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return True
    resolved = str(Path(filename).resolve())
    return any(resolved.startswith(d + "/") for d in _LIBRARY_DIRS)


def user_location(exc: BaseException, path: Path | None = None) -> str:
    """`` at FILE:LINE (`code`)`` of the innermost frame of ``path`` (default: any file outside
    torch and alphac) in ``exc``'s traceback or its cause's, else ``''``.

    torch.export reports user frames only inside its message text, so that is searched last.
    """
    wanted = str(path.resolve()) if path is not None else None

    def is_user(filename: str) -> bool:
        if wanted is not None:
            return bool(filename) and str(Path(filename).resolve()) == wanted
        return not _is_library(filename)

    for cause in (exc, exc.__cause__, exc.__context__):
        if cause is None:
            continue
        frames = [f for f in traceback.extract_tb(cause.__traceback__) if is_user(f.filename)]
        if frames:
            frame = frames[-1]
            source = f" (`{frame.line.strip()}`)" if frame.line else ""
            return f" at {frame.filename}:{frame.lineno}{source}"
    match = re.search(r'File "([^"]+)", line (\d+)', str(exc))
    if match and is_user(match.group(1)):
        return f" at {match.group(1)}:{match.group(2)}"
    return ""
