"""`python -m ncore`: the same as the ncore command."""

from .cli import main

main()
