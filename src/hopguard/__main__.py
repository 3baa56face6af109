import sys

from hopguard.cli.main import main

sys.exit(main())
