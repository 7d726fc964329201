"""Names of clusters and nodes, validated once at the edge.

A name becomes part of NATS subjects and KV keys, so it is limited to a safe alphabet:
lower-case letters, digits and '-', starting with a letter or digit, at most 63 characters.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

#: The cluster name Tandem's own services use for events that belong to no protected cluster
#: (for example ``ServiceStarted``). Operators cannot give a protected cluster this name.
SYSTEM_CLUSTER = "tandem"


class InvalidNameError(ValueError):
    """A cluster or node name that does not match ``NAME_PATTERN``."""


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid cluster or node name, else raise with the reason."""
    if not isinstance(value, str):
        raise InvalidNameError(f"{what} must be a string, got {type(value).__name__}")
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidNameError(
            f"{what} {value!r} is invalid: use 1-63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return value


def _cluster(value: str) -> str:
    return check_name(value, "cluster name")


def _node(value: str) -> str:
    return check_name(value, "node name")


ClusterName = Annotated[str, AfterValidator(_cluster)]
NodeName = Annotated[str, AfterValidator(_node)]
