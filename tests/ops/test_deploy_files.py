"""The deployment files agree with the code: compose.yaml's variables are settings, nginx keeps streams and
WebSockets working, the image installs what `make run` installs. (No Docker engine runs here: the image and the
compose stack themselves are not built by the tests.)"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from qwen_gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
#: variables the deployment sets ahead of the features that will read them (issue 13: quotas on Redis)
LATER = {"QG_REDIS_URL"}


def settings_env() -> set[str]:
    return {f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata.get("env")}


def test_compose_runs_two_gateways_over_shared_services_with_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"gateway-1", "gateway-2", "nginx", "mariadb", "redis"} <= set(services)
    for name in ("gateway-1", "gateway-2"):
        gw = services[name]
        unknown = set(gw["environment"]) - settings_env() - LATER
        assert unknown == set(), f"{name} sets variables the gateway does not read: {unknown}"
        env = gw["environment"]
        assert env["DB_HOST"] == "mariadb" and env["QG_HOST"] == "0.0.0.0"
        assert "QG_OBJECT_SIGNING_KEY" in env  # links signed alike by both processes
        assert "bucket:/data/objects" in gw["volumes"]  # one local bucket ...
    own = {services[n]["volumes"][0] for n in ("gateway-1", "gateway-2")}
    assert len(own) == 2  # ... and a journal of its own for each process


def test_nginx_streams_sse_and_upgrades_websockets() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    ws = conf[conf.index("location ~ ^/v1/chat/(audio|vlm)$") :]
    ws = ws[: ws.index("}")]
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    ws_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", ws).group(1))  # type: ignore[union-attr]
    assert ws_timeout > Settings().ws_idle_timeout
    sse = conf[conf.index("location = /v1/chat/completions") :]
    sse = sse[: sse.index("}")]
    assert "proxy_buffering off;" in sse
    body = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1))  # type: ignore[union-attr]
    assert body * 1024 * 1024 >= Settings().max_body_bytes
    assert conf.count("server gateway-") == 2
    if shutil.which(
        "nginx"
    ):  # Debian's nginx, when installed: the syntax check, hosts made resolvable
        check_nginx_syntax(conf)


def check_nginx_syntax(conf: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        d = Path(folder)
        (d / "default.conf").write_text(re.sub(r"gateway-\d:5000", "127.0.0.1:5000", conf))
        (d / "nginx.conf").write_text(
            f"pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n"
            f"http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p;"
            f" include {d}/default.conf; }}\n"
        )
        result = subprocess.run(
            ["nginx", "-t", "-c", str(d / "nginx.conf")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_the_image_installs_the_project_without_dev_extras_and_runs_as_a_user() -> None:
    docker = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install -q -e .\n" in make  # `make run`: the project's dependencies only
    assert re.search(r"RUN pip install \. ", docker) and "[dev]" not in docker
    assert re.search(r"^USER gateway$", docker, re.M)
    assert "HEALTHCHECK" in docker and "/health" in docker
    assert '"python", "-m", "qwen_gateway"' in docker
