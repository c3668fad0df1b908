"""``python -m bench``: the package's benchmark runner, writing to bench/results."""
import sys

from bench import main

sys.exit(main())
