"""TSIG keys in BIND's format, as ``tsig-keygen`` writes them::

    key "tandem-dr" {
        algorithm hmac-sha256;
        secret "base64...";
    };

One key per file. The secret never appears in a message, a log line or a ``repr``.
``KeyFiles`` reads a key file again when it changes.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.tsig

log = logging.getLogger(__name__)

#: BIND's algorithm names and dnspython's.
ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-md5": dns.tsig.HMAC_MD5,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}

# Quoted strings are matched too, so that a comment marker inside one (a base64 secret may
# hold "//") is left alone.
_COMMENTS = re.compile(r'"[^"]*"|/\*.*?\*/|//[^\n]*|#[^\n]*', re.DOTALL)
_KEY = re.compile(r'\bkey\s+(?:"([^"]+)"|([^\s{"]+))\s*\{(.*?)\}\s*;', re.DOTALL)
_ALGORITHM = re.compile(r"\balgorithm\s+\"?([A-Za-z0-9.-]+)\"?\s*;")
_SECRET = re.compile(r'\bsecret\s+"([^"]*)"\s*;')


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class TsigKey:
    path: Path
    name: str
    algorithm: str
    key: dns.tsig.Key = field(repr=False, compare=False)

    def __str__(self) -> str:
        return f"key {self.name} ({self.algorithm}) from {self.path}"


def _keep_strings(match: re.Match[str]) -> str:
    return match.group(0) if match.group(0).startswith('"') else " "


def parse_key(text: str, path: Path) -> TsigKey:
    """The single key of ``text`` (the contents of ``path``, named in errors)."""
    found = list(_KEY.finditer(_COMMENTS.sub(_keep_strings, text)))
    if not found:
        raise KeyFileError(f'{path}: no key statement (expected key "name" {{ ... }};)')
    if len(found) > 1:
        names = ", ".join(m.group(1) or m.group(2) for m in found)
        raise KeyFileError(f"{path}: {len(found)} keys ({names}); keep one key per file")
    match = found[0]
    name, body = match.group(1) or match.group(2), match.group(3)
    algorithm_match = _ALGORITHM.search(body)
    if algorithm_match is None:
        raise KeyFileError(f"{path}: key {name} has no algorithm")
    algorithm = algorithm_match.group(1).lower()
    if algorithm not in ALGORITHMS:
        raise KeyFileError(
            f"{path}: key {name}: algorithm {algorithm!r} is not supported "
            f"(use one of {', '.join(ALGORITHMS)})"
        )
    secret_match = _SECRET.search(body)
    if secret_match is None:
        raise KeyFileError(f"{path}: key {name} has no secret")
    secret = secret_match.group(1)
    try:
        if not base64.b64decode(secret, validate=True):
            raise KeyFileError(f"{path}: key {name}: the secret is empty")
    except binascii.Error:
        raise KeyFileError(f"{path}: key {name}: the secret is not valid base64") from None
    try:
        key = dns.tsig.Key(name, secret, ALGORITHMS[algorithm])
    except dns.exception.DNSException as exc:
        raise KeyFileError(f"{path}: key name {name!r} is not a valid DNS name: {exc}") from None
    return TsigKey(path=path, name=name, algorithm=algorithm, key=key)


def load_key(path: Path) -> TsigKey:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot be read: {exc}") from None
    return parse_key(text, path)


class KeyFiles:
    """Keys read again when their file changes (size or modification time): a corrected
    key is used from the next update on, without a restart. A file that cannot be read or
    used then keeps the key in force (logged, once per change of the file)."""

    def __init__(self) -> None:
        self._read: dict[Path, tuple[tuple[int, int] | None, TsigKey]] = {}

    def current(self, key: TsigKey) -> TsigKey:
        """The key of ``key.path`` as the file is now (``key`` itself until it changes)."""
        try:
            stat = key.path.stat()
            seen: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            seen = None
        known = self._read.get(key.path)
        if known is None:
            self._read[key.path] = (seen, key)
            return key
        if seen is None or seen == known[0]:
            return known[1]
        try:
            fresh = load_key(key.path)
        except KeyFileError as exc:
            log.error("%s changed but cannot be used (%s): keeping %s", key.path, exc, known[1])
            self._read[key.path] = (seen, known[1])
            return known[1]
        log.info("%s changed: using %s from now on", key.path, fresh)
        self._read[key.path] = (seen, fresh)
        return fresh
