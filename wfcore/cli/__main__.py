"""``python -m wfcore.cli``: the ``wfe`` command."""

from . import main

main()
