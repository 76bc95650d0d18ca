"""``python -m reconfusion`` is the ``reconfusion`` command."""

from reconfusion.cli import entrypoint

entrypoint()
