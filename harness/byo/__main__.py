import sys

from .testbed import main

sys.exit(main())
