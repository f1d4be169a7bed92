"""``python -m agentdb``: the same command line as ``agentdb``."""

from agentdb.cli import main

if __name__ == "__main__":
    main()
