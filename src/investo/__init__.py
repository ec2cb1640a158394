"""Investo: a real-time stock exchange you can run."""

__version__ = "0.1.0"
