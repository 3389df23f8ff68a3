# Shortcuts for ./go, the README's entry point (which needs no make: a fresh machine has none).
.PHONY: setup demo test lint bench soak fresh-check clean

setup demo test lint bench soak:
	./go $@

# The README's two commands on a fresh minimal Debian 12 (root; see scripts/fresh-check.sh).
fresh-check:
	./scripts/fresh-check.sh

clean:
	rm -rf .venv build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
