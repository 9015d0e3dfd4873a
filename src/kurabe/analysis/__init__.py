"""Statistics over stored rows only: the report never computes a number of its own."""
