"""Every table and query: raw-db (raw.py), clean-db (clean.py), monitor-db (monitor.py), over the
engines and bulk load of db.py and the writer locks of locks.py."""
