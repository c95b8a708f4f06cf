"""The safety service: the platform's content filter and its audit trail.

It owns the tables ``safety_terms`` (the admin-managed list: terms and patterns, each with a
category and a severity, ``block`` or ``review``) and ``safety_audit`` (every block, flag,
review decision and list change). Callers match locally: ``client.ContentFilter`` keeps the
list (published to Redis by this service, versioned) in an Aho-Corasick automaton and
rebuilds it when the version moves (``matcher.py``). What callers block or flag reaches the
audit log over the Redis stream ``safety:audit`` (``audit.py`` drains it; the recorder
process ``recorder.py`` keeps it drained and applies the retention).
"""
