"""The one error type users see: the CLI prints it as a single line and exits 2."""


class I3DError(Exception):
    """Bad input (a file, a checkpoint, an argument), said in one line naming the culprit."""
