"""``python -m hf_toolkit`` runs the ``hftk`` command line."""

from hf_toolkit.cli import main

main()
