"""Example: subscribe to Accord's queries events and keep open queries per agreement (see subscriber.py)."""
