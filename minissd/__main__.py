import sys

from minissd.cli import main

sys.exit(main())
