"""The one exception type for bad input a user can fix; the CLIs print it as a single line."""


class UserError(Exception):
    """Bad input (recipe, data, checkpoint, command line): the message says what and how to fix it."""

    def __init__(self, message: str = ""):
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: keep the original line
            message = message.strip().splitlines()[-1].split("UserError: ", 1)[-1]
        super().__init__(message)
