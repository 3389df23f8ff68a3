"""`pidns export`: per-PID-namespace series for Prometheus, over HTTP or into a textfile."""
