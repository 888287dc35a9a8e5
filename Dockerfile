# dqorch in a container: python dqorch.py -c /etc/dqorch/config.yaml, configured by DQ_*.
FROM python:3.11-slim

# 0.0.0.0 so that the container can be reached. Without api_tokens or allow_from
# anyone who can reach port 8081 can register and cancel jobs (docs/SECURITY.md), and
# the node logs a warning saying so at start-up.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DQ_HTTP_HOST=0.0.0.0 \
    DQ_DATA_DIR=/var/lib/dqorch

WORKDIR /opt/dqorch
COPY setup.py constraints.txt dqorch.py ./
COPY dqorch ./dqorch
# constraints.txt: the versions the test suite passed with (README, Dependencies).
RUN pip install --no-cache-dir -c constraints.txt . \
 && useradd --system --uid 10001 --home-dir /var/lib/dqorch dqorch \
 && mkdir -p /var/lib/dqorch /etc/dqorch \
 && chown dqorch /var/lib/dqorch
COPY config.yaml /etc/dqorch/config.yaml

USER dqorch
VOLUME ["/var/lib/dqorch"]
# API, Prometheus metrics, Raft (UDP). The original exposed 9100 while listening on 9101.
EXPOSE 8081 9101 9105/udp

# No curl in the image: dqctl asks the metrics port's /health (default 9101) where the
# node listens, from the same config file and DQ_* variables as the node (http_host,
# metrics_port; loopback for 0.0.0.0). Exit 0 when it answers 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["dqctl", "--config", "/etc/dqorch/config.yaml", "--timeout", "2", "probe"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "/opt/dqorch/dqorch.py", "-c", "/etc/dqorch/config.yaml"]
