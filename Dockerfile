# llm-drift-exporter: slim, non-root, offline (tiktoken rank files ship inside the package).
# Build: docker build -t llm-drift-exporter .
# Run:   docker run -p 9847:9847 -v llm-drift-state:/var/lib/llm-drift-exporter \
#          -v /var/log/llm:/var/log/llm:ro llm-drift-exporter
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m venv /opt/llm-drift-exporter \
 && /opt/llm-drift-exporter/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/llm-drift-exporter/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/llm-drift-exporter \
      --shell /usr/sbin/nologin exporter \
 && mkdir -p /var/lib/llm-drift-exporter /etc/llm-drift-exporter \
 && chown exporter:exporter /var/lib/llm-drift-exporter
COPY --from=build /opt/llm-drift-exporter /opt/llm-drift-exporter
COPY deploy/docker/config.yaml /etc/llm-drift-exporter/config.yaml
ENV PATH=/opt/llm-drift-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1
USER exporter
VOLUME ["/var/lib/llm-drift-exporter"]
EXPOSE 9847
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9847/-/healthy', timeout=3)"]
ENTRYPOINT ["llm-drift-exporter"]
CMD ["run", "--config", "/etc/llm-drift-exporter/config.yaml"]
