#!/usr/bin/env bash
# Run on a connected machine: downloads into .whl/ (git-ignored) the wheels that
# scripts/gpu-check.sh installs on an offline GPU host whose Python 3.12 already
# has torch (CUDA), transformers, safetensors, numpy, pillow, httpx and uvloop.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .whl
platforms=(--platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64
           --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
# The project's runtime needs that such a host lacks, at the versions tested here.
packages=(diffusers==0.42.1 starlette==1.10.0 uvicorn==0.54.0 httptools==0.9.0
          apscheduler==3.11.3 tzlocal==5.4.5 cryptography==50.0.2 cffi==2.1.1 pycparser
          redis==8.1.0 importlib-metadata pytest-asyncio pydantic==2.14.4
          pydantic-core==2.50.5 annotated-types typing-inspection python-multipart
          limits deprecated standardwebhooks
          # the tests' real clients
          openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 truststore jiter sniffio)
for package in "${packages[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "$package"
done
ls .whl
