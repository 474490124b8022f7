"""The one exception type for problems the user can fix (bad input, missing files, bad flags)."""


class UserError(Exception):
    """A problem with the user's input: the message names it and says how to fix it.

    `main.py` and every command-line tool print it as one line and exit with code 2,
    without a traceback.
    """
