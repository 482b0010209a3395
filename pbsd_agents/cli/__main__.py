import sys

from . import main

if __name__ == "__main__":  # `python -m pbsd_agents.cli`
    sys.exit(main())
