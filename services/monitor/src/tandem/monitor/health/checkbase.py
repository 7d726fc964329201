"""Fields every health check has; a leaf module so plugin modules can import it without cycles."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: A check name is used as a KV key and subject token: letters, digits, ``_`` and ``-``.
CHECK_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class CheckBase(BaseModel):
    """Common configuration of a check; each plugin's config adds ``plugin`` and its own fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=CHECK_NAME_PATTERN)
    #: The application this check watches (None: the node itself).
    application: str | None = None
    interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    enabled: bool = True
    #: After the check starts (and, for an application's check, each time the node starts
    #: serving it), failures do not count for the rules until the first good sample or
    #: this long: an application that is still starting is not a broken one.
    start_grace_s: float = Field(default=10.0, ge=0)


def elapsed_ms(start: float, end: float) -> float:
    """Milliseconds between two ``time.perf_counter()`` readings."""
    return (end - start) * 1000.0
