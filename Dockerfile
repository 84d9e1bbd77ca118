# One image for the API, the migration step and CPU workers.
# Build with --build-arg EXTRAS=worker for an image that can train (adds tensorflow).
FROM python:3.11-slim
ARG EXTRAS=""
WORKDIR /app
ENV PYTHONUNBUFFERED=1 FITQ_DATA_DIR=/data
# Dependencies first, so code changes reuse the cached layer.
COPY pyproject.toml README.md ./
RUN mkdir -p api worker models migrations fitq \
    && pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
    && pip uninstall -y fitq
COPY . .
RUN pip install --no-cache-dir --no-deps .
EXPOSE 8000
CMD ["fitq", "api", "--host", "0.0.0.0", "--port", "8000"]
