"""The errors a user can cause and fix; the CLI turns them into one line and a non-zero exit."""


class TransferlabError(Exception):
    """A problem with the user's input or environment, explained in its message."""


class ConfigError(TransferlabError):
    """A config value that is not allowed; the message names the key and what is allowed."""
