"""`python -m execution`: the operator's command line (see `execution.cli`)."""

from execution.cli import main

if __name__ == "__main__":
    main()
