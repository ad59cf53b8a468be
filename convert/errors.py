"""The one error type users see: the CLI prints it as a single line and exits 2; argument
errors take the same shape (`ArgumentParser`, for the CLI and the benchmark scripts)."""
import argparse


class I3DError(Exception):
    """Bad input (a file, a checkpoint, an argument), said in one line naming the culprit."""


def printable(text: str, limit: int | None = 80) -> str:
    """Text a file chose (a key, a name) fit for a one-line message: line breaks, escape
    sequences and other control characters shown escaped, clipped to `limit` characters."""
    text = str(text)
    clipped = limit is not None and len(text) > limit
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return text[:limit - 3] + "..." if clipped or (limit and len(text) > limit) else text


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as one line (the usage is one `--help` away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
