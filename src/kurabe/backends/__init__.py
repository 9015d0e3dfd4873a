"""Backends: the servers kurabe talks to."""
