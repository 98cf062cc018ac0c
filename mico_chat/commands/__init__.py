"""Subcommands of the ``mico-chat`` CLI, one module each (see :mod:`mico_chat.cli`)."""
