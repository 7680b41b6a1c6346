"""`python -m ncore`: the same as the ncore command."""

from .main import main

main()
