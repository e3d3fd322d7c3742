import sys

from dasr.cli import main

sys.exit(main())
