"""Errors the command-line entry points turn into one-line messages."""


class UsageError(Exception):
    """A setting or file given on the command line that cannot work; the message says which and why."""
