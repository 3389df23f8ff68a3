"""Side-by-side benchmarks against named peers, reported as ratios (`./go bench`)."""
