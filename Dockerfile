# Phoenix LB container image, in the habit of the official images: one
# process in the foreground, a non-root user, the config mounted read-only.
#
#   docker build -t phoenix-lb .
#   docker run -d --name phoenix-lb -p 80:80 -p 443:443 --stop-timeout 35 \
#       -v "$PWD/phoenix.yaml:/etc/phoenix-lb/phoenix.yaml:ro" phoenix-lb
#
# Not built by the test suite (its machines have no container engine);
# tests/deploy/test_dockerfile.py checks what it can without one.

# ---- build: compile the hot path with mypyc into a wheel -------------------
FROM python:3.11-slim AS build
# The compiler only builds the wheel and is not in the final image: the
# distribution's current gcc is the right one (hence no version pin).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# Wheels for phoenix-lb (compiled: the same `pip install .` build as
# scripts/setup) and every dependency, so the runtime stage needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime ----------------------------------------------------------------
FROM python:3.11-slim
# A fixed numeric id, so that Kubernetes' runAsNonRoot can check USER and
# mounted files can be owned by it.
ARG PHOENIX_UID=10001
RUN groupadd --system --gid "$PHOENIX_UID" phoenix-lb \
 && useradd --system --uid "$PHOENIX_UID" --gid phoenix-lb --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin phoenix-lb
# The wheels are bind-mounted from the build stage (BuildKit, the default
# builder since Docker 23), so they take no layer.  The build falls back to
# pure Python when compiling fails; an image must not, hence the assert.
# Only the wheels built above can be installed (--no-index): nothing to pin.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels phoenix-lb \
 && python -c "from phoenix_lb.commands.run import hot_path_build as b; assert b() == 'compiled', b()" \
 && mkdir -p /etc/phoenix-lb /var/log/phoenix-lb \
 && chown phoenix-lb:phoenix-lb /var/log/phoenix-lb
ENV PYTHONUNBUFFERED=1
USER $PHOENIX_UID:$PHOENIX_UID

# 80 and 443 bind as a non-root user because Docker (20.10 and later) sets
# net.ipv4.ip_unprivileged_port_start=0 in the container's network namespace;
# with --network host, use ports above 1023 or set that sysctl on the host.
# 9000 is the admin listener (/metrics, /status, /health): it binds
# 127.0.0.1 unless the config says otherwise, and a non-loopback bind
# requires admin.auth_token_file.
EXPOSE 80 443 9000

# SIGTERM: stop accepting, finish in-flight requests for up to
# shutdown_timeout (30s), exit 0.  Docker's default grace is 10s, so run
# with --stop-timeout 35 (compose: stop_grace_period: 35s).
STOPSIGNAL SIGTERM

# The admin listener's /health: 200 while the balancer serves and every
# upstream has a server up, 503 otherwise (urlopen raises, exit status 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/health', timeout=2)"]

ENTRYPOINT ["phoenix-lb", "run", "-c", "/etc/phoenix-lb/phoenix.yaml"]
