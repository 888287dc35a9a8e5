# dqorch in a container: python dqorch.py -c /etc/dqorch/config.yaml, configured by DQ_*.
FROM python:3.11-slim

# 0.0.0.0 so that the container can be reached. Without api_tokens or allow_from
# anyone who can reach port 8081 can register and cancel jobs (docs/SECURITY.md), and
# the node logs a warning saying so at start-up.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DQ_HTTP_HOST=0.0.0.0 \
    DQ_DATA_DIR=/var/lib/dqorch

WORKDIR /opt/dqorch
COPY setup.py dqorch.py ./
COPY dqorch ./dqorch
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home-dir /var/lib/dqorch dqorch \
 && mkdir -p /var/lib/dqorch /etc/dqorch \
 && chown dqorch /var/lib/dqorch
COPY config.yaml /etc/dqorch/config.yaml

USER dqorch
VOLUME ["/var/lib/dqorch"]
# API, Prometheus metrics, Raft (UDP). The original exposed 9100 while listening on 9101.
EXPOSE 8081 9101 9105/udp

# No curl in the image: ask the metrics port's /health with the Python we already have.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('DQ_METRICS_PORT', '9101'), timeout=2)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "/opt/dqorch/dqorch.py", "-c", "/etc/dqorch/config.yaml"]
