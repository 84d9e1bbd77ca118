# The API image: the API, migrations, the dispatcher and Flower. No tensorflow.
# The worker image is Dockerfile.worker.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 FITQ_DATA_DIR=/data
# Dependencies first, from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p api worker models core queueing checks storage dispatcher migrations fitq \
    && pip install --no-cache-dir ".[ops]" \
    && pip uninstall -y fitq
COPY api api
COPY worker worker
COPY models models
COPY core core
COPY queueing queueing
COPY checks checks
COPY storage storage
COPY dispatcher dispatcher
COPY migrations migrations
COPY fitq fitq
RUN pip install --no-cache-dir --no-deps . \
    && useradd --uid 10001 --no-create-home fitq \
    && mkdir -p /data /artifacts && chown fitq /data /artifacts
USER fitq
EXPOSE 8000 5555
CMD ["fitq", "api", "--host", "0.0.0.0", "--port", "8000"]
