"""Side-by-side benchmarks against named peers, reported as ratios (`make bench`)."""
