"""`python -m rbee.cli`: how `rbee up` and the tests start the queen and hives."""

from rbee.cli import main

main()
