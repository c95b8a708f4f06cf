"""The auth service: accounts, passwords, sessions and the signing of access tokens (the
only holder of the private key). It owns the tables ``users``, ``refresh_tokens`` and
``password_reset_tokens``.

Its classes, each with the dependencies it uses: ``service.Accounts`` (registration,
profile, avatar), ``sessions.Sessions`` (sign-in, refresh, sign-out), ``passwords.Passwords``
(change and reset), ``deletion.AccountDeletion``, ``directory.Directory`` (public profiles,
export, the internal directory) and ``admin.Administration``.
"""
