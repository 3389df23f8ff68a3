"""Reading a /proc tree: pure parsers and a race-tolerant reader."""
