"""Shared fixtures."""

pytest_plugins = ["tests.servers"]
