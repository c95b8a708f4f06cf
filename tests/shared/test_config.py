import pytest

from shared.config import ConfigError, env_seconds, load_settings


def test_development_defaults_put_everything_under_the_data_folder(tmp_path):
    settings = load_settings({"DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'platform.db'}"
    assert settings.credits_database_url == settings.database_url
    assert settings.jwt_private_key_path.parent == tmp_path / "keys"


def test_development_service_token_is_generated_once_per_data_folder(tmp_path):
    first = load_settings({"DATA_DIR": str(tmp_path)}).service_token
    assert len(first) >= 32
    assert load_settings({"DATA_DIR": str(tmp_path)}).service_token == first


def test_each_service_may_have_its_own_database(tmp_path):
    settings = load_settings({"DATA_DIR": str(tmp_path), "DATABASE_URL": "sqlite:///a.db",
                              "GALLERY_DATABASE_URL": "sqlite:///g.db"})
    assert settings.gallery_database_url == "sqlite:///g.db"
    assert settings.auth_database_url == "sqlite:///a.db"


@pytest.mark.parametrize("env, message", [
    ({"APP_ENV": "production", "JWT_PRIVATE_KEY_PATH": "k", "JWT_PUBLIC_KEY_PATH": "p"}, "SERVICE_TOKEN"),
    ({"APP_ENV": "production"}, "JWT_PRIVATE_KEY_PATH"),
    ({"APP_ENV": "production", "SERVICE_TOKEN": "x"}, "JWT_PRIVATE_KEY_PATH"),
    ({"APP_ENV": "staging"}, "APP_ENV"),
    ({"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT"),
])
def test_bad_or_missing_settings_stop_start_up(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({"DATA_DIR": str(tmp_path), **env})


def test_access_tokens_are_short_lived_and_never_zero(tmp_path):
    assert load_settings({"DATA_DIR": str(tmp_path)}).access_token_minutes == 15
    with pytest.raises(ConfigError, match="ACCESS_TOKEN_MINUTES"):
        load_settings({"DATA_DIR": str(tmp_path), "ACCESS_TOKEN_MINUTES": "0"})


@pytest.mark.parametrize("raw, bounds, expected", [
    ("", {}, 7.0),
    ("0", {}, 0.0),
    ("2.5", {"maximum": 300}, 2.5),
    ("300", {"maximum": 300}, 300.0),
    ("-1", {}, r"0 \(off\) or more seconds"),
    ("301", {"maximum": 300}, r"from 0 \(off\) to 300 seconds"),
    ("0", {"maximum": 3600, "zero": False}, "above 0 and at most 3600 seconds"),
    ("soon", {}, "a number of seconds"),
])
def test_durations_are_read_within_their_bounds(raw, bounds, expected):
    if isinstance(expected, float):
        assert env_seconds({"WAIT_SECONDS": raw}, "WAIT_SECONDS", 7.0, **bounds) == expected
    else:
        with pytest.raises(ConfigError, match=f"WAIT_SECONDS must be {expected}"):
            env_seconds({"WAIT_SECONDS": raw}, "WAIT_SECONDS", 7.0, **bounds)
