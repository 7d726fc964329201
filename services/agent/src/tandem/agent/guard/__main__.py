import sys

from tandem.agent.guard.main import main

sys.exit(main(sys.argv[1:]))
