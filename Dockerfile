# Image of the inferno control loop: `docker build -t inferno-loop .`
# Default command: `inferno live` (the controller). The same image runs the load emulator
# (`args: ["emulate-load", ...]` in yamls/deploy/load-emulator.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what `pip install .` needs, so edits to tests or docs do not invalidate the layer.
COPY pyproject.toml README.md ./
COPY inferno ./inferno
COPY sim ./sim
COPY live ./live
RUN pip install . && rm -rf /app/build

# Unprivileged user; matches runAsUser in yamls/deploy/*.yaml.
RUN useradd --uid 10001 --no-create-home --home-dir /tmp inferno
USER 10001
WORKDIR /tmp

# CONTROLLER_PORT (GET /invoke, /metrics)
EXPOSE 3300
ENTRYPOINT ["inferno"]
CMD ["live"]
