"""The gallery service: works saved from render outputs, the public gallery, likes, views,
downloads, reports and moderation, and every user's notifications. It owns the tables
``works``, ``work_tags``, ``work_likes``, ``work_hits``, ``work_reports`` and ``notifications``."""
