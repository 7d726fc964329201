"""The node guard: a small process apart from the agent that hides the node and stops its
applications when the agent's "may serve until" deadline passes (see ``main``)."""
