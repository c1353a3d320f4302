"""Runnable examples for integrators; not part of the installed package."""
