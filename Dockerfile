# qwen-gateway: a slim, non-root image. Build: `docker build -t qwen-gateway .`; see docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The project and its runtime dependencies only (`make run`'s install, not the dev extras of `make test`).
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY qwen_gateway ./qwen_gateway
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin gateway \
    && mkdir -p /data/objects \
    && chown -R gateway:gateway /data

# The browser pages and the published contract, served at /web/ and /schemas/ (found beside the package:
# the gateway is started from /app with `python -m`).
COPY web ./web
COPY schemas ./schemas

USER gateway
ENV QG_HOST=0.0.0.0 \
    QG_PORT=5000 \
    QG_DATA_DIR=/data
EXPOSE 5000
# The journal (and, without DB_HOST / BUCKET, the SQLite history and local objects) lives here.
VOLUME ["/data"]

# /health answers 503 when a required dependency is down; urlopen raises on it (no curl in a slim image).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('QG_PORT', '5000'), timeout=4)"]

# SIGTERM stops the gateway (and every worker of QG_WORKERS) cleanly with status 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "qwen_gateway"]
CMD ["serve", "--env-file", ""]
