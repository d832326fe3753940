"""The one exception type the converter reports to the user (message only, no traceback)."""


class ConvertError(Exception):
    pass
