"""The one exception type for user-facing data problems; CLIs print it without a traceback."""


class DataError(Exception):
    """Bad input, bad output location or bad configuration: the message says what to change."""
