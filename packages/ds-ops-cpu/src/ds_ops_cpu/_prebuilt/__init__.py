"""Ops compiled ahead of time by the wheel's build hook (empty in a source checkout)."""
