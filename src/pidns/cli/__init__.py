"""The `pidns` command line: click commands, output as rich tables/trees or JSON."""
