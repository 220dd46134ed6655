import sys

from osaas.cli import main

sys.exit(main())
