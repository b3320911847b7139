"""The converter's one error type: a user mistake or bad input, printed as one line."""


class ConvertError(Exception):
    """Bad input or options. The CLI prints str(e) on one line and exits non-zero."""
