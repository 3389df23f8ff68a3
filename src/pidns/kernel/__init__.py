"""Thin typed wrappers over kernel interfaces, one module per interface, no policy."""
