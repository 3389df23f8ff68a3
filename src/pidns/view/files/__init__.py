"""Renderers of the per-task files whose content names pids: pure functions over the host's bytes.

Each takes the bytes the daemon read from its own proc tree and the namespace's translation, and
returns the bytes the kernel's procfs owned by that namespace would show.
"""
