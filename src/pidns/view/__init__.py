"""A namespace's proc tree served anywhere: the kernel backend and our own FUSE implementation."""
