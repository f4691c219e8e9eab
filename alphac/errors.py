"""Errors a user can cause.

Every exception a user can trigger through bad input derives from :class:`UserError`. The CLI
prints its message (no traceback) and exits with ``exit_code``; ``alphac --debug COMMAND`` re-raises
it with its traceback instead. The message must say what was wrong, where, and what to do about it;
the Python API raises the same classes with the same messages.

Exit codes of the ``alphac`` command (also in docs/errors.md):

====  ==========================================================================================
0     success
1     internal error (a bug: any exception that is not a UserError), or ``alphac properties
      --check`` found a disagreement
2     usage: a bad option or argument (:class:`UserError` itself, :class:`InvalidInputShapeError`,
      :class:`UnknownTargetError`, :class:`DeviceError`, :class:`RunDirError`,
      :class:`InvalidDurationError`, an invalid recipe or search setting)
3     the model cannot be loaded or built (:class:`ModelLoadError`, :class:`UnknownModelError`),
      or its output does not fit the target (:class:`OutputShapeError`)
4     the model cannot be captured as a graph (:class:`TraceError`)
5     the dataset is missing, incomplete or corrupt (:class:`DatasetError`)
6     training diverged or could not run (:class:`TrainingError`)
7     a ground-truth check crashed (:class:`CheckError`)
8     a mutation found no child (:class:`SynthesisFailed`)
9     a run directory's journal cannot be used (``alphac.search.journal.JournalError``; its
      usage-like subclasses exit 2)
130   interrupted (Ctrl-C)
====  ==========================================================================================
"""

from __future__ import annotations


class UserError(Exception):
    """Base of all user-caused errors: the message says what is wrong and how to fix it."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nhint: {hint}")


class ModelLoadError(UserError):
    """The model file or zoo name could not be turned into an ``nn.Module``."""

    exit_code = 3


class UnknownModelError(ModelLoadError):
    """A ``zoo:NAME`` that the zoo does not contain."""


class TraceError(UserError):
    """Neither torch.fx nor torch.export could capture the model as a graph."""

    exit_code = 4


class InvalidInputShapeError(UserError):
    """An ``--input-shape`` that cannot be parsed or does not fit the model."""


class UnknownTargetError(UserError):
    """A ``--target`` that alphac does not know."""


class OutputShapeError(UserError):
    """A model whose output is not the ``(batch, classes)`` logits its target needs."""

    exit_code = 3


class InvalidDurationError(UserError):
    """A ``--budget`` (or other duration) that is not a positive time such as ``1h30m``."""


class DeviceError(UserError):
    """A ``--device`` that does not exist on this machine."""


class RunDirError(UserError):
    """An output folder (``--out``) that cannot be created or written."""


class DatasetError(UserError):
    """A dataset that is missing, incomplete or corrupt."""

    exit_code = 5


class TrainingError(UserError):
    """Training diverged (NaN/Inf loss) or could not run with the given settings."""

    exit_code = 6


class CheckError(UserError):
    """A ground-truth check (``alphac properties --check``) crashed: it could not decide.

    Distinct from exit code 1, which means the check ran and found a disagreement.
    """

    exit_code = 7


class SynthesisFailed(UserError):
    """A mutation found no child: synthesis met no target in its budget, or a gate refused.

    ``prop`` names the property that was furthest off (``shape``, ``depth``, ``mixing``) or the
    stage that refused (``structure``, ``gate``), ``distance`` how far (None when not a distance).
    Not a bug and not bad input: a search records it and carries on; ``alphac mutate`` prints it.
    """

    exit_code = 8

    def __init__(self, reason: str, *, prop: str | None = None,
                 distance: float | None = None, hint: str | None = None) -> None:
        self.reason = reason
        self.prop = prop
        self.distance = distance
        super().__init__(reason, hint=hint or "try another --seed; a different subgraph or "
                         "perturbation is drawn")


class CaptureWarning(UserWarning):
    """The captured graph differs from the model in some mode (see :mod:`alphac.frontends`)."""


class PassError(Exception):
    """A pass failed inside a PassManager; names the pass and those already run.

    Not a UserError: it signals a bug in a pass (or an unsupported graph), so the CLI shows it with
    context rather than as a plain message.
    """

    def __init__(self, pass_name: str, already_run: tuple[str, ...], cause: BaseException) -> None:
        self.pass_name = pass_name
        self.already_run = already_run
        done = ", ".join(already_run) if already_run else "none"
        super().__init__(f"pass {pass_name!r} failed ({cause!r}); passes already run: {done}")
