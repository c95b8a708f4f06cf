"""Mechanisms every service shares: configuration, database, errors, tokens, events, tasks, storage."""
