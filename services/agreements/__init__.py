"""The agreements service: organisations, users and API tokens, and the shared agreement itself."""
