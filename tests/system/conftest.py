"""Fixtures of the multi-host tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from conftest import has_binary, require
from netns_rig import Lan


@pytest.fixture
async def lan() -> AsyncIterator[Lan]:
    require("root", os.geteuid() == 0, "network namespaces and nftables need root")
    for binary, package in (("ip", "iproute2"), ("nft", "nftables"), ("arping", "iputils-arping")):
        require(binary, has_binary(binary), f"install {package}")
    net = Lan()
    try:
        try:
            net.create("chan", "pub")
        except RuntimeError as exc:
            require("network namespaces", False, str(exc))
        yield net
    finally:
        await net.close()
