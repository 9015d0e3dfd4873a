"""kurabe: an honest, reproducible shootout between local LLMs."""

__version__ = "0.1.0"


class KurabeError(Exception):
    """An error the user can fix; the CLI prints its message without a traceback."""
