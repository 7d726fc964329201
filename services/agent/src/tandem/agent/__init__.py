"""Tandem node agent: runs the replicator and the monitor (and, with later issues, the step
executor and OS control) for one node of a protected cluster, in one process."""
