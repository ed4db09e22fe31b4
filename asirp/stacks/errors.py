"""The one error of the stack engine, shown to the operator as a single line."""

from __future__ import annotations


class StackError(ValueError):
    """A stack cannot be processed: bad input, a bad chunk result, or a store that does not fit."""
