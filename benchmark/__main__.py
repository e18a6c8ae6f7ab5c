"""``python -m kdbench``: the command line."""
from .cli import main

main()
