"""Errors that describe a problem with what the user gave (not a bug); the CLI prints them in one line."""


class ConfigError(ValueError):
    """An unknown preset, an invalid config file or option."""
