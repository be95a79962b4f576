"""The EdgeMLError family: every error a user can act on says the file, the problem and the fix."""

from __future__ import annotations

from os import PathLike


class EdgeMLError(Exception):
    """An error with a message a user can act on; the CLI prints it on one line and exits 2."""

    def __init__(self, problem: str, *, path: str | PathLike | None = None, fix: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.path}: {self.problem}" if self.path else self.problem
        if self.fix:
            text = f"{text.rstrip('.')}. {self.fix}"
        return text


class InputError(EdgeMLError):
    """Bad user input: an argument, a file or a folder that cannot be used as given."""


class VideoError(InputError):
    """A video that cannot be decoded or lacks what the compressed-domain pipeline needs."""


class DataError(InputError):
    """A data set that is missing, malformed or inconsistent."""


class CheckpointError(InputError):
    """A checkpoint or weight pack that is corrupt, truncated or belongs to another model."""


class ConfigError(InputError):
    """A configuration or target profile that cannot be parsed or is invalid."""


class ExportError(EdgeMLError):
    """An export that cannot be produced for the requested target."""


class MissingDependencyError(EdgeMLError):
    """An optional backend or package that is not installed."""

    def __init__(self, package: str, *, extra: str | None = None, purpose: str | None = None):
        what = f"{package} is not installed" + (f" (needed for {purpose})" if purpose else "")
        fix = f"install it with: pip install 'edgeml[{extra}]'" if extra else f"install it with: pip install {package}"
        super().__init__(what, fix=fix)
