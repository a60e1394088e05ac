"""Hostfiles and resource filters: which hosts and slots a job runs on.

A hostfile has one ``<hostname> slots=<N>`` line per host; blank lines and ``#`` comments are
ignored. ``-i/--include`` and ``-e/--exclude`` take ``NODE_SPEC[@NODE_SPEC ...]`` where
``NODE_SPEC`` is ``NAME[:SLOT[,SLOT ...]]``; a spec without slots means every slot of that host.
The active resources are an ordered ``{host: [slot, ...]}`` that is passed, base64-encoded JSON,
to every node as ``--world_info``.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import re

from deepspeed.utils.logging import logger

_HOST_LINE = re.compile(r"^(\S+)\s+slots\s*=\s*(\d+)\s*$")


def _parse_hostfile(lines) -> "collections.OrderedDict[str, int]":
    pool: collections.OrderedDict[str, int] = collections.OrderedDict()
    for lineno, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _HOST_LINE.match(line)
        if match is None:
            raise ValueError(
                f"hostfile line {lineno} is {raw.strip()!r}, which is not of the form "
                f"'<hostname> slots=<count>' (e.g. 'worker-0 slots=8')"
            )
        host, slots = match.group(1), int(match.group(2))
        if host in pool:
            raise ValueError(f"hostfile lists host '{host}' twice (line {lineno}); list each host once")
        pool[host] = slots
    if not pool:
        raise ValueError("hostfile has no '<hostname> slots=<count>' line")
    return pool


def fetch_hostfile(hostfile_path: str | None) -> "collections.OrderedDict[str, int] | None":
    """``{host: slot count}`` from a hostfile, or None when the file does not exist (single-node
    run on this machine)."""
    if not hostfile_path or not os.path.isfile(hostfile_path):
        logger.debug("Unable to find hostfile %s, will proceed with training with local resources only.",
                     hostfile_path)
        return None
    with open(hostfile_path) as fd:
        return _parse_hostfile(fd.readlines())


def _parse_spec(spec: str) -> list[tuple[str, list[int] | None]]:
    parsed = []
    for node in spec.split("@"):
        node = node.strip()
        if not node:
            raise ValueError(f"empty node in resource filter {spec!r}; expected 'host[:slot,slot][@host...]'")
        if ":" in node:
            host, slot_str = node.split(":", 1)
            try:
                slots = [int(s) for s in slot_str.split(",") if s.strip() != ""]
            except ValueError:
                raise ValueError(
                    f"slots in {node!r} must be integers separated by commas, e.g. '{host}:0,1'"
                ) from None
            if not slots:
                raise ValueError(f"no slot after ':' in {node!r}; write '{host}' for all slots or '{host}:0,1'")
            parsed.append((host, slots))
        else:
            parsed.append((node, None))
    return parsed


def parse_resource_filter(host_info, include_str: str = "", exclude_str: str = ""):
    """Filter ``{host: [slots]}`` by an include or an exclude string (not both).

    Examples: ``include_str="worker-0@worker-1:0,2"`` keeps every slot of worker-0 and slots 0
    and 2 of worker-1; ``exclude_str="worker-1:0"`` drops slot 0 of worker-1. Host order follows
    ``host_info``; slots come out sorted and unique.
    """
    if include_str and exclude_str:
        raise ValueError("include_str and exclude_str are mutually exclusive.")
    if not include_str and not exclude_str:
        return host_info
    including = bool(include_str)
    if including:
        filtered: dict[str, list[int]] = {}
    else:
        filtered = {host: list(slots) for host, slots in host_info.items()}
    for host, slots in _parse_spec(include_str or exclude_str):
        if host not in host_info:
            raise ValueError(f"Hostname '{host}' not found in hostfile")
        for slot in slots or []:
            if slot not in host_info[host]:
                raise ValueError(f"No slot '{slot}' specified on host '{host}'")
        if including:
            chosen = list(host_info[host]) if slots is None else slots
            filtered[host] = filtered.get(host, []) + chosen
        elif slots is None:
            filtered.pop(host, None)
        elif host in filtered:
            filtered[host] = [s for s in filtered[host] if s not in slots]
    ordered = collections.OrderedDict()
    for host in host_info:
        if host in filtered and filtered[host]:
            ordered[host] = sorted(set(filtered[host]))
    return ordered


def parse_inclusion_exclusion(resource_pool, inclusion: str, exclusion: str):
    """``{host: slot count}`` → ``{host: [slots]}`` after the include/exclude filter."""
    active = collections.OrderedDict((host, list(range(slots))) for host, slots in resource_pool.items())
    return parse_resource_filter(active, include_str=inclusion, exclude_str=exclusion)


def encode_world_info(world_info) -> str:
    """URL-safe base64 of the JSON ``{host: [slots]}`` (what ``--world_info`` carries)."""
    return base64.urlsafe_b64encode(json.dumps(world_info).encode("utf-8")).decode("utf-8")


def decode_world_info(world_info_base64: str) -> "collections.OrderedDict[str, list[int]]":
    try:
        raw = base64.urlsafe_b64decode(world_info_base64.encode("utf-8"))
        info = json.loads(raw, object_pairs_hook=collections.OrderedDict)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"--world_info={world_info_base64!r} is not base64-encoded JSON: {exc}") from None
    if not isinstance(info, dict) or not info:
        raise ValueError(f"--world_info must encode a non-empty {{host: [slots]}} mapping, got {info!r}")
    return info
