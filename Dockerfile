# The crewrun API and worker image (temporal-docker-compose.yml builds it).
FROM python:3.11.7-slim
WORKDIR /app
COPY pyproject.toml README.md worker.py alembic.ini ./
COPY backend backend
COPY workflows workflows
COPY activities activities
COPY examples examples
RUN pip install --no-cache-dir . && useradd --system --no-create-home crewrun
USER crewrun
ENV CREWRUN_LOG_FORMAT=json PYTHONUNBUFFERED=1
CMD ["python", "-m", "worker"]
