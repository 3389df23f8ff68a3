"""A FUSE low-level server that knows nothing of /proc.

node.py     the contract a filesystem implements: Node, Attr, Absent, Requester
inodes.py   the inode table: exact lookup counts, invalidation grouped by an opaque owner key
bridge.py   FUSE operations as calls on nodes; every handler answers with one Reply
server.py   one connection: the request loop, its standby thread, INIT, INTERRUPT, answer-once;
            the watchdog and the notifier shared by every connection

A filesystem hands the server a root Node; nodes raise OSError with the errno the caller must see.
"""
