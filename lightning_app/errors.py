"""Errors the command-line entry points turn into one-line messages."""


class UsageError(Exception):
    """A setting or file given on the command line that cannot work; the message says which and why."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped ``fit``; the message says where the run got to and the command that resumes it.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C still does; the command lines print the message in one
    line and exit with 130, as a shell does for a program ended by SIGINT.
    """
