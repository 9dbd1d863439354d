"""`python -m robustgen ...` runs the `robustgen` command."""

from robustgen.cli import main

if __name__ == "__main__":
    main()
