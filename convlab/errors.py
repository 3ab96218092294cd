"""The exceptions convlab raises for bad input.

Every error is a :class:`ConvlabError` and also a built-in ``ValueError`` or
``TypeError``, so callers can catch either.
"""

from __future__ import annotations


class ConvlabError(Exception):
    """Base class of every error convlab raises on purpose."""


class ConvlabValueError(ConvlabError, ValueError):
    """An argument has the right type but an impossible value or shape."""


class ConvlabTypeError(ConvlabError, TypeError):
    """An argument has the wrong type, dtype, or belongs to another framework."""


class BackendNotAvailableError(ConvlabValueError):
    """The requested backend is unknown or its framework is not installed."""
