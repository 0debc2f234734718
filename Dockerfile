# payswitch: the switch with its compiled hot path, as a non-root container.
#   docker build -t payswitch .
#   docker run -p 8583:8583 -p 127.0.0.1:9583:9583 payswitch     (card sandbox)
# Stage 1 compiles the Cython modules into a wheel; stage 2 installs only the
# wheel (no compiler, no sources) and runs as an unprivileged user.

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libsqlite3-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY native native
COPY switch switch
COPY adapters adapters
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/payswitch --create-home payswitch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels \
 && python -c "import native.iso8583, native.framing, native.routing, native.sqlbatch, native.aead, native.hmac256" \
 && python -c "from switch import compiled; bad = compiled.problems(); assert not bad, bad"
COPY ops/docker/switch.toml /etc/payswitch/switch.toml
USER payswitch
WORKDIR /var/lib/payswitch
# journal, its key and nothing else: readable by the switch's user only
VOLUME /var/lib/payswitch
EXPOSE 8583 9583
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9583/healthz', timeout=2)"]
ENTRYPOINT ["payswitch"]
CMD ["serve", "--config", "/etc/payswitch/switch.toml"]
