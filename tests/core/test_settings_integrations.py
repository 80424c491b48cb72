"""The sections that connect other systems: `[[sources]]`, `[alertmanager]`, `[[webhooks]]`,
`[dcgm]`; each parsed, and each bad value failing at start naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Alertmanager, ConfigError, Dcgm, Source, load_settings


def _toml(tmp_path: Path, text: str, **env: str) -> dict[str, str]:
    path = tmp_path / "factory.toml"
    path.write_text(text)
    return {"FACTORY_CONFIG": str(path), **env}


def test_none_by_default() -> None:
    settings = load_settings({})
    assert settings.sources == ()
    assert settings.webhooks == ()
    assert settings.alertmanager == Alertmanager()
    assert settings.dcgm == Dcgm()


def test_all_sections_are_parsed(tmp_path: Path) -> None:
    settings = load_settings(_toml(tmp_path, """
[[sources]]
name = "iris"
kind = "kserve"
topic = "knative-broker-default"
features = ["a", "b"]
version_header = "X-Model-Version"
score_output = "proba"
max_pending = 50
pairing_timeout = "1m"

[alertmanager]
urls = ["http://am-0:9093", "http://am-1:9093"]
resend = "30s"
dashboard_url = "https://pulse.example/"

[[webhooks]]
name = "gh"
url = "https://api.github.com/repos/acme/models/dispatches"
template = "github"
secret_env = "HOOK_SECRET"
headers_env = { Authorization = "GH_AUTH" }

[retraining]
webhook_max_age = "2h"

[dcgm]
model_label = "namespace"
""", HOOK_SECRET="x", GH_AUTH="Bearer y"))  # noqa: S106
    assert settings.sources == (Source(
        name="iris", kind="kserve", topic="knative-broker-default", features=("a", "b"),
        version_header="X-Model-Version", score_output="proba", max_pending=50,
        pairing_timeout_s=60.0),)
    assert settings.alertmanager == Alertmanager(
        urls=("http://am-0:9093", "http://am-1:9093"), resend_s=30.0,
        dashboard_url="https://pulse.example/")
    (hook,) = settings.webhooks
    assert hook.template == "github"
    assert hook.headers_env == {"Authorization": "GH_AUTH"}
    assert settings.webhook_max_age_s == 7200.0
    assert settings.dcgm.model_label == "namespace"


def test_the_alertmanager_url_comes_from_the_environment_too() -> None:
    settings = load_settings({"FACTORY_ALERTMANAGER_URL": "http://a:9093,http://b:9093"})
    assert settings.alertmanager.urls == ("http://a:9093", "http://b:9093")
    with pytest.raises(ConfigError, match=r"FACTORY_ALERTMANAGER_URL\[0\]"):
        load_settings({"FACTORY_ALERTMANAGER_URL": "am:9093"})


@pytest.mark.parametrize(("text", "key"), [
    ('[[sources]]\nname = "s"\nkind = "kafka"\ntopic = "t"\n', "sources[0] (s).kind"),
    ('[[sources]]\nname = "s"\nkind = "kserve"\n', "sources[0] (s).topic"),
    ('[[sources]]\nname = "a b"\nkind = "kserve"\ntopic = "t"\n', "sources[0] (a b).name"),
    ('[[sources]]\nname = "s"\nkind = "kserve"\ntopic = "t"\nmax_pending = 0\n',
     "sources[0] (s).max_pending"),
    ('[[sources]]\nname = "s"\nkind = "kserve"\ntopic = "t"\npairing_timeout = "x"\n',
     "sources[0] (s).pairing_timeout"),
    ('[[sources]]\nname = "s"\nkind = "kserve"\ntopic = "t"\nfeatures = "a"\n',
     "sources[0] (s).features"),
    ('[[sources]]\nname = "s"\nkind = "kserve"\ntopic = "t"\ntpoic = "u"\n',
     "sources[0] (s).tpoic"),
    ('[[sources]]\nname = "s"\nkind = "kserve"\ntopic = "t"\n'
     '[[sources]]\nname = "s"\nkind = "kserve"\ntopic = "u"\n', "sources (s)"),
    ('[alertmanager]\nurls = ["ftp://x"]\n', "alertmanager.urls[0]"),
    ('[alertmanager]\nresend = 0\n', "alertmanager.resend"),
    ('[[webhooks]]\nname = "w"\nurl = "http://h/"\n', "webhooks[0] (w).body"),
    ('[[webhooks]]\nname = "w"\nurl = "http://h/"\ntemplate = "jenkins"\n',
     "webhooks[0] (w).template"),
    ('[[webhooks]]\nname = "w"\nurl = "http://h/"\ntemplate = "github"\n'
     'secret_env = "NOT_SET_ANYWHERE"\n', "webhooks[0] (w).secret_env"),
    ('[[webhooks]]\nname = "w"\nurl = "http://h/"\ntemplate = "github"\nmax_attempts = 0\n',
     "webhooks[0] (w).max_attempts"),
    ('[dcgm]\nmodel_pattern = "(["\n', "dcgm.model_pattern"),
])
def test_bad_values_fail_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_toml(tmp_path, text))
    assert err.value.key == key
