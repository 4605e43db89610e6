"""Every error Kerani raises on purpose, each with the exit code the CLI returns for it."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the `kerani` command."""

    ok = 0
    bad_args = 1
    input_file = 2
    missing_dependency = 3
    external_program = 4
    template = 5
    not_found = 6
    conflict = 7
    forbidden = 8
    other = 15


class KeraniError(Exception):
    """Base class: a message meant for the user and the exit code that goes with it."""

    exit_code = ExitCode.other


class BadInputError(KeraniError):
    """An input file or value is unusable; the message names it and says what is wrong."""

    exit_code = ExitCode.input_file


class MissingDependencyError(KeraniError):
    """A program Kerani needs (tesseract, pdftoppm) is not installed."""

    exit_code = ExitCode.missing_dependency


class ExternalProgramError(KeraniError):
    """An external program failed, timed out, or produced unusable output."""

    exit_code = ExitCode.external_program


class TemplateError(KeraniError):
    """A form template is invalid; the message names the field and the rule."""

    exit_code = ExitCode.template


class NotFoundError(KeraniError):
    """A batch, page, task or worker that was asked for does not exist."""

    exit_code = ExitCode.not_found


class ConflictError(KeraniError):
    """The request clashes with the current state (a lease held by another worker, say)."""

    exit_code = ExitCode.conflict


class ForbiddenError(KeraniError):
    """The caller's role or lease does not allow this."""

    exit_code = ExitCode.forbidden
