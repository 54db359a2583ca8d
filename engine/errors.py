"""The one exception type for bad input a user can fix; the CLIs print it as a single line."""


class UserError(Exception):
    """Bad input (recipe, data, checkpoint, command line): the message says what and how to fix it."""
