# syntax=docker/dockerfile:1
# The Glia receiver (`glia serve`, `glia migrate`), built with uv from uv.lock.
#   docker build -t glia:local .      (compose.yaml does this for the receiver and migrate services)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# uv from the package index, pinned to the version that wrote uv.lock.
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/glia
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock file changes, not on every code edit.
# The receiver is the server part: the client's dependencies and the `server` extra, not the dev group.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra server --no-install-project
COPY glia_otel ./glia_otel
COPY receiver ./receiver
COPY migrations ./migrations
COPY snakemake_logger_plugin_glia ./snakemake_logger_plugin_glia
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra server --no-editable

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 glia \
    && useradd --system --uid 10001 --gid glia --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin glia
# The virtual environment holds the project and its dependencies; nothing else from the build stage is kept.
COPY --from=build /opt/glia /opt/glia
ENV PATH=/opt/glia/bin:$PATH \
    PYTHONUNBUFFERED=1
USER glia
EXPOSE 4318
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4318/readyz', timeout=3)"]
CMD ["glia", "serve", "--host", "0.0.0.0", "--port", "4318"]
