"""The one exception type for bad input: every layer raises it, only the command line prints it."""


class ConfigError(ValueError):
    """A setting or an input that cannot work; the message names the value and what is allowed."""
