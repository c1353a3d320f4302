"""Accord's four services. Each runs as its own process: ``accord-<service>`` or ``python -m services.<service>``."""
