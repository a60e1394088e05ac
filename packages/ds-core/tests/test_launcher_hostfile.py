"""Hostfile, include/exclude and world-info parsing of the ``deepspeed`` launcher."""

import collections

import pytest

from deepspeed.launcher.hostfile import decode_world_info
from deepspeed.launcher.runner import (
    encode_world_info,
    fetch_hostfile,
    parse_inclusion_exclusion,
    parse_resource_filter,
)


@pytest.fixture
def hosts():
    return collections.OrderedDict([("worker-0", [0, 1, 2, 3]), ("worker-1", [0, 1, 2, 3])])


def _write(tmp_path, text):
    path = tmp_path / "hostfile"
    path.write_text(text)
    return str(path)


def test_hostfile_lines_comments_and_order(tmp_path):
    path = _write(tmp_path, "# cluster\nworker-1 slots=4\n\nworker-0  slots = 2  # small node\n")
    pool = fetch_hostfile(path)
    assert list(pool.items()) == [("worker-1", 4), ("worker-0", 2)]


def test_missing_hostfile_means_local_run(tmp_path):
    assert fetch_hostfile(str(tmp_path / "nope")) is None


@pytest.mark.parametrize("text, match", [
    ("worker-0 slots=4\nworker-0 slots=2\n", "lists host 'worker-0' twice"),
    ("worker-0 4\n", "line 1 is 'worker-0 4', which is not of the form"),
    ("worker-0 slots=four\n", "not of the form '<hostname> slots=<count>'"),
    ("# only a comment\n", "has no '<hostname> slots=<count>' line"),
])
def test_bad_hostfile(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        fetch_hostfile(_write(tmp_path, text))


def test_include_whole_host_and_slots(hosts):
    out = parse_resource_filter(hosts, include_str="worker-1:0,2@worker-0")
    # host order follows the hostfile, not the filter
    assert list(out.items()) == [("worker-0", [0, 1, 2, 3]), ("worker-1", [0, 2])]


def test_include_duplicates_are_merged_sorted(hosts):
    out = parse_resource_filter(hosts, include_str="worker-0:3,1@worker-0:1")
    assert out == {"worker-0": [1, 3]}


def test_exclude_slots_and_hosts(hosts):
    assert parse_resource_filter(hosts, exclude_str="worker-1:0") == {
        "worker-0": [0, 1, 2, 3], "worker-1": [1, 2, 3]}
    assert parse_resource_filter(hosts, exclude_str="worker-0") == {"worker-1": [0, 1, 2, 3]}
    # excluding every slot of a host drops the host
    assert parse_resource_filter(hosts, exclude_str="worker-1:0,1,2,3") == {"worker-0": [0, 1, 2, 3]}


def test_no_filter_returns_everything(hosts):
    assert parse_resource_filter(hosts) == hosts


@pytest.mark.parametrize("kwargs, match", [
    (dict(include_str="worker-0", exclude_str="worker-1"), "mutually exclusive"),
    (dict(include_str="worker-9"), "Hostname 'worker-9' not found in hostfile"),
    (dict(exclude_str="worker-0:7"), "No slot '7' specified on host 'worker-0'"),
    (dict(include_str="worker-0:a"), "must be integers"),
])
def test_bad_filters(hosts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        parse_resource_filter(hosts, **kwargs)


def test_inclusion_exclusion_from_pool():
    pool = collections.OrderedDict([("a", 2), ("b", 3)])
    assert parse_inclusion_exclusion(pool, "", "b:1") == {"a": [0, 1], "b": [0, 2]}


def test_world_info_round_trip():
    info = collections.OrderedDict([("worker-1", [0, 2]), ("worker-0", [1])])
    encoded = encode_world_info(info)
    assert "=" not in encoded.rstrip("=") and "+" not in encoded and "/" not in encoded
    assert list(decode_world_info(encoded).items()) == list(info.items())
    with pytest.raises(ValueError, match="not base64-encoded JSON"):
        decode_world_info("!!!")
