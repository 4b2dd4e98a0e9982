"""``python -m redbeat.cli``: the ``redbeat`` command."""

from . import main

main()
