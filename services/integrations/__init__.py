"""The integrations service: how internal services and HTTP integrators use the platform.
It owns the tables ``service_accounts`` (settings of service accounts: owner, allowed
workflows, concurrency, signed-URL lifetime, queue signing key), ``queue_requests`` (the
queue API's request log: idempotency, answers), ``queue_dead_letters``, ``webhook_endpoints``
and ``webhook_deliveries``.

Its classes: ``service.ServiceAccounts`` (creation, limits, budget, key rotation),
``endpoints.WebhookEndpoints`` (registration, deliveries, re-sending),
``request_log.RequestLog``. Its processes besides the API: the queue bridge
(``queue.py``, classes in ``bridge.py``, contract in ``contract.py``, broker in ``broker.py``),
the webhook dispatcher (``webhooks.py``, ``deliveries.py``) and ``events.py``.
"""
