"""Bearer tokens of the orchestrator API: the token file, the environment form, roles, actors."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from tandem.orchestrator.api.auth import (
    ApiRole,
    Principal,
    TokenConfigError,
    TokenStore,
    load_tokens,
    require,
)

VIEWER = "viewer-token-0123456789"
OPERATOR = "operator-token-0123456789"
ADMIN = "admin-token-0123456789abc"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_token_file_gives_each_token_its_role(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""# API tokens of the orchestrator

viewer {VIEWER}
  operator\t{OPERATOR}   # on-call team
ADMIN {ADMIN}
""",
    )
    store = load_tokens(path, None)
    assert len(store) == 3
    assert (p := store.authenticate(VIEWER)) is not None and p.role is ApiRole.VIEWER
    assert (p := store.authenticate(OPERATOR)) is not None and p.role is ApiRole.OPERATOR
    assert (p := store.authenticate(ADMIN)) is not None and p.role is ApiRole.ADMIN
    assert store.authenticate("not-a-known-token-at-all") is None
    assert store.authenticate(VIEWER[:-1]) is None
    assert store.authenticate("") is None


def test_an_unknown_role_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"# comment\nviewer {VIEWER}\nsuperuser {OPERATOR}\n")
    with pytest.raises(TokenConfigError) as info:
        load_tokens(path, None)
    text = str(info.value)
    assert f"{path}, line 3" in text
    assert "'superuser'" in text and "viewer, operator, admin" in text
    assert OPERATOR not in text


def test_a_token_written_before_its_role_is_not_quoted_back(tmp_path: Path) -> None:
    path = write(tmp_path, f"{OPERATOR} operator\n")
    with pytest.raises(TokenConfigError, match="line 1: unknown role") as info:
        load_tokens(path, None)
    assert OPERATOR not in str(info.value)


def test_a_short_token_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"viewer {VIEWER}\n\noperator short-token-15c\n")
    with pytest.raises(TokenConfigError) as info:
        load_tokens(path, None)
    text = str(info.value)
    assert f"{path}, line 3" in text
    assert "too short (15 characters; at least 16" in text
    assert "short-token-15c" not in text


def test_exactly_sixteen_characters_are_enough() -> None:
    assert len(load_tokens(None, "viewer " + "x" * 16)) == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"viewer {VIEWER} extra", "expected '<role> <token>', got 3 fields"),
        (VIEWER, "expected '<role> <token>', got 1 field"),
        ("viewer tökén-with-ümläuts-000", "the token must be printable ASCII"),
    ],
)
def test_malformed_lines_are_explained(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, f"viewer {ADMIN}\n{line}\n")
    with pytest.raises(TokenConfigError) as info:
        load_tokens(path, None)
    text = str(info.value)
    assert f"line 2: {expected}" in text
    assert VIEWER not in text


def test_a_token_given_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f"viewer {VIEWER}\nadmin {VIEWER}\n")
    with pytest.raises(
        TokenConfigError, match=r"line 2: the same token is already given at .*line 1"
    ):
        load_tokens(path, None)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=f"cannot read the API token file {missing}"):
        load_tokens(missing, None)


def test_the_environment_form_is_semicolon_separated() -> None:
    store = load_tokens(None, f"viewer {VIEWER}; operator {OPERATOR};")
    assert len(store) == 2
    assert (p := store.authenticate(OPERATOR)) is not None and p.role is ApiRole.OPERATOR


def test_environment_errors_name_the_variable_and_entry() -> None:
    with pytest.raises(TokenConfigError, match=r"^TANDEM_API_TOKENS, entry 2: unknown role 'root'"):
        load_tokens(None, f"viewer {VIEWER};root {OPERATOR}")
    with pytest.raises(
        TokenConfigError, match=r"^TANDEM_ORCHESTRATOR_TOKENS, entry 1: .*too short"
    ):
        load_tokens(None, "viewer abc", env_name="TANDEM_ORCHESTRATOR_TOKENS")


def test_file_and_environment_add_up(tmp_path: Path) -> None:
    path = write(tmp_path, f"viewer {VIEWER}\n")
    store = load_tokens(path, f"admin {ADMIN}")
    assert len(store) == 2
    with pytest.raises(TokenConfigError, match="already given at"):
        load_tokens(path, f"admin {VIEWER}")


def test_no_token_at_all_is_allowed_but_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        store = load_tokens(None, None)
    assert len(store) == 0
    assert "no API tokens" in caplog.text


def test_roles_are_ordered() -> None:
    assert ApiRole.VIEWER < ApiRole.OPERATOR < ApiRole.ADMIN
    admin = Principal(ApiRole.ADMIN, "abcdef")
    viewer = Principal(ApiRole.VIEWER, "abcdef")
    assert all(admin.allows(role) for role in ApiRole)
    assert viewer.allows(ApiRole.VIEWER)
    assert not viewer.allows(ApiRole.OPERATOR)
    assert ApiRole.parse("Operator") is ApiRole.OPERATOR
    with pytest.raises(ValueError, match="unknown role"):
        require("superuser")


def test_the_actor_names_the_role_and_a_fingerprint_never_the_token(tmp_path: Path) -> None:
    store = TokenStore([(ApiRole.OPERATOR, OPERATOR), (ApiRole.VIEWER, VIEWER)])
    principal = store.authenticate(OPERATOR)
    assert principal is not None
    expected = "operator:" + hashlib.sha256(OPERATOR.encode()).hexdigest()[:6]
    assert principal.actor == expected
    for text in (principal.actor, repr(principal), repr(store), str(store)):
        assert OPERATOR not in text and VIEWER not in text
    assert repr(store) == "TokenStore(2 tokens: 1 viewer, 1 operator)"


def test_token_errors_are_value_errors() -> None:
    assert issubclass(TokenConfigError, ValueError)
    with pytest.raises(ValueError, match="token 1: the token is too short"):
        TokenStore([(ApiRole.ADMIN, "short")])
