from __future__ import annotations

import pytest

from adapters.objectstore import InvalidKey, safe_filename, validate_key, validate_prefix


@pytest.mark.parametrize("key", ["a", "datasets/1/2/train.csv", "models/x/weights.safetensors", "a b/ü.txt"])
def test_valid_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "non-empty"),
        ("../etc/passwd", "'..'"),
        ("a/../../b", "'..'"),
        ("a/./b", "'.'"),
        ("/etc/passwd", "relative"),
        ("C:/x", "relative"),
        ("a//b", "empty path segment"),
        ("a/", "empty path segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a\nb", "control"),
        ("x" * 1025, "longer than 1024"),
        ("a/" + "y" * 256, "segment is longer"),
    ],
)
def test_hostile_keys_are_refused(key: str, why: str) -> None:
    with pytest.raises(InvalidKey, match=why):
        validate_key(key)


def test_prefix_may_end_with_slash_or_be_empty() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("datasets/1/") == "datasets/1/"
    with pytest.raises(InvalidKey):
        validate_prefix("../")


@pytest.mark.parametrize("name", ["train.csv", "model-00001-of-00002.safetensors", "données (v2).jsonl"])
def test_ordinary_file_names_pass(name: str) -> None:
    assert safe_filename(name) == name


def test_file_name_is_nfc_normalised() -> None:
    assert safe_filename("cafe\u0301.csv") == "caf\u00e9.csv"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("..", "traverse"),
        ("../../etc/passwd", "traverse"),
        ("dir/x.csv", "traverse"),
        ("C:\\fakepath\\x.csv", "traverse"),
        (".htaccess", "hidden"),
        ("x.csv.", "ends with"),
        (" x.csv", "whitespace"),
        ("x\x00.csv", "forbidden"),
        ("a:b.csv", "forbidden"),
        ("a|b.csv", "forbidden"),
        ("evil\u202egnp.exe", "invisible"),
        ("CON.csv", "reserved"),
        ("lpt1", "reserved"),
        ("x" * 256, "longer"),
    ],
)
def test_hostile_file_names_are_refused(name: str, why: str) -> None:
    with pytest.raises(InvalidKey, match=why):
        safe_filename(name)
