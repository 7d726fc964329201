"""`python -m tandem.agent --config node.toml`: run the node agent."""

from tandem.agent.main import main

raise SystemExit(main())
