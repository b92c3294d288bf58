# syntax=docker/dockerfile:1
# ollama-gateway image: wheels are built in one stage, installed into a slim runtime in the next.
# The base image is pinned (Python patch release and Debian release); raise it deliberately.
#   docker build -t ollama-gateway .
#   docker run -p 8080:8080 -v ./deploy/gateway.yaml:/etc/ollama-gateway/config.yaml:ro \
#     -e GATEWAY_API_KEY=... -e GATEWAY_ADMIN_KEY=... ollama-gateway
# The config comes from a mount, secrets from the environment (${VAR} in the config); the image
# holds neither.

# --- build: the project and all its dependencies as wheels ----------------------------------------
FROM python:3.11.15-slim-trixie AS build
# The project's extras built in: fast (uvloop, the event loop scripts/serve.sh and the benchmark run
# on). Add tracing for OpenTelemetry export:  docker build --build-arg GATEWAY_EXTRAS=fast,tracing .
ARG GATEWAY_EXTRAS=fast
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore keeps .git, .venv, tests, .env and deploy/ out of this context.
COPY . .
RUN pip wheel --wheel-dir /wheels ".[${GATEWAY_EXTRAS}]"

# --- runtime: no compiler, no source tree, no pip cache ------------------------------------------
FROM python:3.11.15-slim-trixie AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Same as `pip install ".[fast]"`, from the wheels built above; the bind mount keeps them out of any
# layer. The check fails the build if uvloop did not make it in (the gateway would run on asyncio's loop).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index /wheels/*.whl \
 && python -c "import uvloop"
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway \
 && mkdir -p /etc/ollama-gateway
USER 10001:10001
EXPOSE 8080
# slim has no curl: probe with the interpreter. urlopen raises on non-2xx, so the exit code is 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["ollama-gateway", "--config", "/etc/ollama-gateway/config.yaml", "--host", "0.0.0.0", "--port", "8080"]
