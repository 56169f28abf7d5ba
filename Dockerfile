# One image for migrate, the API and the worker (docker-compose.yml builds it once and chooses each command).

# The browser app is built in its own stage (npm packages from the lock file); only its output enters the image.
FROM node:20-slim AS web
WORKDIR /web
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# CPU build of torch from PyTorch's index (the default PyPI wheel is the multi-GB CUDA build);
# for a GPU worker, build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
COPY --from=web /web/dist ./frontend/dist
RUN pip install -e . && useradd --create-home nextcase && mkdir -p /data && chown nextcase /data
USER nextcase

ENV NEXTCASE_DATA_DIR=/data NEXTCASE_BLOB_DIR=/data/blobs
EXPOSE 8000
CMD ["nextcase", "serve", "--host", "0.0.0.0", "--port", "8000"]
