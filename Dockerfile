# imagegen on an NVIDIA GPU (it falls back to the CPU when the container sees none).
#
#   docker build -t imagegen .
#   docker run --gpus all -p 8000:8000 imagegen
#
# The CUDA *base* image is enough: it sets NVIDIA_VISIBLE_DEVICES and
# NVIDIA_DRIVER_CAPABILITIES so the container toolkit mounts the host driver,
# and the torch wheel brings its own CUDA runtime libraries.
FROM nvidia/cuda:12.6.3-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# torch first, from the CUDA index: `pip install .` then finds the requirement
# met and never pulls a CPU build from PyPI. Its own layer, so code changes
# do not download it again.
ARG TORCH_VERSION=2.8.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
RUN pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY imagegen ./imagegen
COPY store ./store
COPY web ./web
RUN pip install .

# A user with no shell and no write access to the code. HOME is /tmp so any
# library cache lands on the tmpfs the deployments mount there.
RUN groupadd --system --gid 10001 imagegen \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin imagegen
USER 10001:10001
ENV HOME=/tmp \
    IMAGEGEN_HOST=0.0.0.0 \
    IMAGEGEN_PORT=8000
WORKDIR /tmp
EXPOSE 8000

# Liveness only (the process answers); readiness is /readyz, for load balancers.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IMAGEGEN_PORT', '8000'), timeout=2)"]

CMD ["imagegen", "serve"]
