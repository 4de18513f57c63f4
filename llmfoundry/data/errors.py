"""The exception type for user-facing data problems; CLIs print it without a traceback."""


class DataError(Exception):
    """Bad input or bad configuration: the message says what to change. (An unusable output location raises
    llmfoundry.storage.StorageError, which the data-prep CLI reports the same way.)"""
