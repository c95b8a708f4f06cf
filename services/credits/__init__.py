"""The credits service: prices, balances, holds for render jobs, redeem codes and the
append-only ledger. Owns the tables ``credit_accounts``, ``credit_ledger``, ``credit_holds``
and ``credit_redeem_codes``."""
