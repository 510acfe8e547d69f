"""python -m dreamercli: the same app as the `dreamer` command."""

from .cli import main

main()
