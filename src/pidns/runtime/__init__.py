"""Making PID namespaces: the launcher, the init that runs at pid 1, names, and joining one."""
