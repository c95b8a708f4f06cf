"""The render domain: jobs and their state machine, workflows, the worker catalog and
dispatch. Its HTTP API is mounted by the gateway; ``services.render_worker`` runs the jobs."""
