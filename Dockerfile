# Image of the inferno controller: `docker build -t inferno-loop:0.1.0 .`
# Default command: `inferno live`. The same image runs the load emulator
# (`args: ["load-noise", ...]` in yamls/deploy/load-emulator.yaml).
# Only the core and the `live` extra are installed (no SimPy, pandas or matplotlib), at the
# versions pinned in docker/requirements-live.txt.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependency layer: rebuilt only when the pins change, not on every code edit.
COPY docker/requirements-live.txt requirements-live.txt
RUN pip install --no-cache-dir -r requirements-live.txt

# The package itself, without resolving dependencies again.
COPY pyproject.toml README.md ./
COPY inferno ./inferno
COPY sim ./sim
COPY live ./live
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && \
    rm -rf /app/build /app/*.egg-info

# Unprivileged user; matches runAsUser/runAsGroup in yamls/deploy.
RUN groupadd --gid 10001 inferno && \
    useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp inferno
USER 10001
WORKDIR /tmp

# 3300: GET /invoke (and /health); 3301: /metrics and /health (CONTROLLER_METRICS_PORT)
EXPOSE 3300 3301
ENTRYPOINT ["inferno"]
CMD ["live"]
