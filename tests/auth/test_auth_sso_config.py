"""How single sign-on is configured: OIDC_PROVIDERS as JSON or as keys with their own
variables, and the mistakes that stop auth from starting."""
from __future__ import annotations

import json

import pytest

from shared.config import ConfigError, load_settings
from services.auth.config import load_config

BASE = {"APP_ENV": "test"}


def config(**env: str):
    merged = {**BASE, **env}
    return load_config(load_settings(merged), merged)


def test_nothing_configured_means_no_provider():
    loaded = config()
    assert loaded.oidc_providers == () and loaded.wecom is None


def test_keys_with_their_own_variables_and_defaults():
    loaded = config(OIDC_PROVIDERS="keycloak, entra-id", OIDC_ADMIN_GROUPS="admins, ops",
                    OIDC_KEYCLOAK_ISSUER="https://sso.example.com/realms/staff/", OIDC_KEYCLOAK_CLIENT_ID="aigc",
                    OIDC_KEYCLOAK_CLIENT_SECRET="s1", OIDC_KEYCLOAK_NAME="Staff",
                    OIDC_ENTRA_ID_ISSUER="https://login.microsoftonline.com/t/v2.0", OIDC_ENTRA_ID_CLIENT_ID="c",
                    OIDC_ENTRA_ID_CLIENT_SECRET="s2", OIDC_ENTRA_ID_ADMIN_GROUPS="", OIDC_ENTRA_ID_AUTO_LINK_VERIFIED_EMAIL="yes")
    keycloak, entra = loaded.oidc_providers
    assert (keycloak.key, keycloak.name, keycloak.issuer) == ("keycloak", "Staff", "https://sso.example.com/realms/staff")
    assert keycloak.scopes == "openid profile email" and keycloak.username_claim == "preferred_username"
    assert keycloak.admin_groups == {"admins", "ops"} and keycloak.auto_link_verified_email is False
    assert entra.key == "entra-id" and entra.admin_groups == frozenset() and entra.auto_link_verified_email is True


def test_json_with_the_secret_in_a_variable():
    providers = [{"key": "okta", "issuer": "https://corp.okta.com", "clientId": "c", "adminGroups": ["A"],
                  "autoLinkVerifiedEmail": True, "icon": "/icons/okta.svg"}]
    (okta,) = config(OIDC_PROVIDERS=json.dumps(providers), OIDC_OKTA_CLIENT_SECRET="from-a-variable").oidc_providers
    assert okta.client_secret == "from-a-variable" and okta.admin_groups == {"A"} and okta.auto_link_verified_email


@pytest.mark.parametrize("env, message", [
    ({"OIDC_PROVIDERS": "[{"}, "not valid JSON"),
    ({"OIDC_PROVIDERS": '[1]'}, "JSON list"),
    ({"OIDC_PROVIDERS": "Bad Key"}, "provider key"),
    ({"OIDC_PROVIDERS": "kc", "OIDC_KC_ISSUER": "https://i", "OIDC_KC_CLIENT_ID": "c"}, "OIDC_KC_CLIENT_SECRET"),
    ({"OIDC_PROVIDERS": '[{"key": "kc", "issuer": "https://i", "clientId": "c", "clientSecret": "s", "scope": "x"}]'},
     "unknown fields"),
    ({"OIDC_PROVIDERS": '[{"key": "kc", "issuer": "https://i", "clientId": "c", "clientSecret": "s", "scopes": "email"}]'},
     "'openid'"),
    ({"OIDC_PROVIDERS": '[{"key": "kc", "issuer": "https://i", "clientId": "c", "clientSecret": "s", '
                        '"icon": "https://elsewhere/i.png"}]'}, "icon"),
    ({"OIDC_PROVIDERS": '[{"key": "wecom", "issuer": "https://i", "clientId": "c", "clientSecret": "s"}]'}, "unique"),
    ({"WECHAT_CORP_ID": "ww1", "WECHAT_SECRET": "s"}, "WECHAT_AGENT_ID"),
])
def test_mistakes_stop_the_start(env, message):
    with pytest.raises(ConfigError, match=message):
        config(**env)


def test_wecom_needs_its_three_settings():
    wecom = config(WECHAT_CORP_ID="ww1", WECHAT_AGENT_ID="1000002", WECHAT_SECRET="s").wecom
    assert (wecom.api_url, wecom.qr_login_url) == ("https://qyapi.weixin.qq.com",
                                                   "https://login.work.weixin.qq.com/wwlogin/sso/login")
