"""WeCom (企业微信) sign-in for a company's self-built app.

A browser outside WeCom is sent to 扫码登录 (the QR page), the WeCom client's own browser to
网页授权 (OAuth inside the client); both come back with a ``code``, which
``/cgi-bin/auth/getuserinfo`` turns into the member's ``userid``, and ``/cgi-bin/user/get``
gives the name, departments and position. Every call needs the app's access token: it is
kept in Redis (shared by every auth process) until shortly before WeCom's ``expires_in``,
and fetched again only when it is missing or WeCom says it expired. Errors read in Chinese:
the people who see them sign in to a Chinese company's WeCom.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping
from urllib.parse import urlencode

import redis
import requests

from services.auth.config import WECOM_KEY, WeComConfig
from services.auth.external import (CodeRejected, ExternalProfile, ProviderDenied, ProviderUnavailable,
                                    SignInFlow, suggested_username, web_url)

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10
TOKEN_MARGIN = 300  # seconds: a cached token is dropped this long before WeCom's expiry
# errcodes meaning "the access token is no longer good": fetch a new one and ask once more.
TOKEN_ERRCODES = frozenset({40014, 42001, 40082})
CODE_ERRCODES = frozenset({40029, 40163, 50001})  # invalid, used, or not from this app's trusted domain


class WeComError(ProviderUnavailable):
    """WeCom answered with a non-zero errcode."""


class WeComProvider:
    kind = "wecom"
    key = WECOM_KEY
    name = "企业微信"
    icon = ""
    auto_link_verified_email = False  # WeCom vouches for no address

    def __init__(self, config: WeComConfig, redirect_uri: str, cache: redis.Redis) -> None:
        self.config = config
        self.redirect_uri = redirect_uri
        self.cache = cache
        self.token_key = f"sso:wecom:token:{config.corp_id}:{config.agent_id}"

    def authorization_url(self, flow: SignInFlow, user_agent: str) -> str:
        if "wxwork" in user_agent.lower():  # the WeCom client's browser
            query = urlencode({"appid": self.config.corp_id, "redirect_uri": self.redirect_uri,
                               "response_type": "code", "scope": "snsapi_base", "state": flow.state,
                               "agentid": self.config.agent_id})
            return f"{self.config.oauth_url}?{query}#wechat_redirect"
        query = urlencode({"login_type": "CorpApp", "appid": self.config.corp_id, "agentid": self.config.agent_id,
                           "redirect_uri": self.redirect_uri, "state": flow.state})
        return f"{self.config.qr_login_url}?{query}"

    def complete(self, flow: SignInFlow, params: Mapping[str, str]) -> ExternalProfile:
        code = params.get("code")
        if not code:
            raise ProviderDenied("企业微信未返回授权码：登录已取消或未获授权，请重新登录。")
        identity = self._call("/cgi-bin/auth/getuserinfo", {"code": code})
        userid = identity.get("userid") or identity.get("UserId")
        if not userid:
            raise ProviderDenied("只有本企业的成员可以登录：企业微信未返回成员账号（userid）。",
                                 code="WECOM_NOT_MEMBER")
        member = self._call("/cgi-bin/user/get", {"userid": userid})
        name = str(member.get("name") or "")[:100]
        departments = member.get("department") or []
        email = member.get("biz_mail") or member.get("email") or None
        return ExternalProfile(
            provider=self.key, subject=str(userid)[:255],
            username=suggested_username(str(userid), email), display_name=name or str(userid)[:100],
            email=email.strip().lower()[:254] if isinstance(email, str) and "@" in email else None,
            email_verified=False,  # WeCom does not vouch for addresses: never used to link accounts
            avatar_url=web_url(member.get("avatar")),
            department=",".join(str(department) for department in departments)[:200],
            position=str(member.get("position") or "")[:100])

    def access_token(self) -> str:
        """The app's access token: from the cache, or fetched (and cached) when missing."""
        cached = self.cache.get(self.token_key)
        if cached:
            return cached.decode() if isinstance(cached, bytes) else cached
        data = self._get("/cgi-bin/gettoken", {"corpid": self.config.corp_id, "corpsecret": self.config.secret})
        token, expires_in = data.get("access_token"), data.get("expires_in")
        if not isinstance(token, str) or not isinstance(expires_in, int):
            raise WeComError("企业微信返回的 access_token 格式不正确。")
        self.cache.set(self.token_key, token, ex=max(60, expires_in - TOKEN_MARGIN))
        return token

    def _call(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """An API call with the access token; a token WeCom calls expired is replaced once."""
        for attempt in range(2):
            token = self.access_token()
            try:
                return self._get(path, {"access_token": token, **params})
            except WeComError as exc:
                errcode = (exc.details or {}).get("errcode")
                if errcode in TOKEN_ERRCODES and attempt == 0:
                    self.cache.delete(self.token_key)
                    continue
                if errcode in CODE_ERRCODES:
                    raise CodeRejected(f"企业微信授权码无效或已被使用，请重新登录（错误码 {errcode}）。",
                                       details={"errcode": errcode}) from exc
                raise
        raise AssertionError("unreachable")

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.config.api_url}{path}"
        try:
            response = requests.get(url, params=params, timeout=HTTP_TIMEOUT)
            response.raise_for_status()
            data = response.json()
        except (requests.RequestException, ValueError) as exc:
            log.warning("WeCom %s failed: %s", path, type(exc).__name__)  # the URL holds the secret or token
            raise ProviderUnavailable("无法连接企业微信，请稍后再试。") from exc
        if not isinstance(data, dict):
            raise ProviderUnavailable("企业微信返回了无法识别的内容。")
        errcode = data.get("errcode", 0)
        if errcode != 0:
            log.warning("WeCom %s: errcode %s (%s)", path, errcode, data.get("errmsg"))
            raise WeComError(f"企业微信登录失败：{data.get('errmsg') or '未知错误'}（错误码 {errcode}）。",
                             code="WECOM_ERROR", details={"errcode": errcode})
        return data
