"""The auth service: accounts (people and service accounts), passwords, sessions, single
sign-on, API tokens and the signing of access tokens (the only holder of the private key). It
owns the tables ``users``, ``refresh_tokens``, ``password_reset_tokens``, ``external_identities``,
``sso_provider_switches``, ``api_tokens`` and ``auth_outbox``.

Its classes, each with the dependencies it uses: ``service.Accounts`` (registration,
profile, avatar), ``sessions.Sessions`` (sign-in, refresh, sign-out), ``passwords.Passwords``
(change and reset), ``deletion.AccountDeletion``, ``directory.Directory`` (public profiles,
export, the internal directory), ``admin.Administration``, ``outbox.Outbox`` (announcements
that must reach ``platform:events``; sent on by the ``relay`` process), and single sign-on:
``sso.SingleSignOn`` (the flow), ``oidc.OidcProvider`` and ``wecom.WeComProvider`` (the
providers), ``identities.LinkedIdentities`` and ``identities.ProviderSwitches``; and
``api_tokens.ApiTokens`` (API tokens and their exchange) and ``service_accounts.ServiceAccounts``.
"""
