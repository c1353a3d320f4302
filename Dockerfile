# syntax=docker/dockerfile:1
# One image for every Accord service; the command picks the service:
#   docker build -t accord .
#   docker run --rm -e ACCORD_DATABASE_URL=... -e ACCORD_AMQP_URL=... accord accord-agreements serve
# Configuration comes only from ACCORD_* environment variables at run time (no secrets in the image).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md is the project's `readme`: the build needs it for the package metadata.
COPY pyproject.toml README.md ./
COPY accord_runtime ./accord_runtime
COPY business_time ./business_time
COPY contracts ./contracts
COPY services ./services
COPY accord_cli ./accord_cli
# The runtime dependencies only (no dev extras), into a venv copied whole into the final stage.
RUN python -m venv /opt/accord \
 && /opt/accord/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/accord/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ACCORD_HTTP_HOST=0.0.0.0 \
    ACCORD_HTTP_PORT=8000
RUN groupadd --system --gid 10001 accord \
 && useradd --system --uid 10001 --gid accord --home-dir /home/accord --create-home \
      --shell /usr/sbin/nologin accord
COPY --from=build /opt/accord /opt/accord
USER accord
WORKDIR /home/accord
EXPOSE 8000
# Liveness only (the process answers); compose checks readiness (/readyz) on top of it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ACCORD_HTTP_PORT', '8000'), timeout=2)"]
CMD ["accord-agreements", "serve"]
