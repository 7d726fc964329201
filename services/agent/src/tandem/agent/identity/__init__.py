"""The node's public network identity (the address clients reach the Active on): expose it on
the Active, hide it everywhere else."""

from tandem.agent.identity.base import IdentityStatus, NetworkIdentity
from tandem.agent.identity.loopback import LoopbackIdentity

__all__ = ["IdentityStatus", "LoopbackIdentity", "NetworkIdentity"]
