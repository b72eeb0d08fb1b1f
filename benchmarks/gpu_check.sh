#!/usr/bin/env bash
# Check and time, on a GPU machine, the folder benchmarks/gpu_prepare.py wrote: benchmarks/gpu_check.py
# (see its docstring) under a time limit. The machine needs an NVIDIA driver (CUDA 13), the Python the
# folder was prepared for with numpy >= 2, and PyTorch for the timing; not our compilers.
#
# Usage: benchmarks/gpu_check.sh [--cpu] [--repeat N] [--no-time] [--models M ...] [--profile] [--json FILE] [DIR | DIR.tar.xz]
# Environment: PYTHON (default python3), TIMEOUT in seconds for the whole run (default 470).
# Exit status: 0 when every check passed, 1 when one failed, 2 on a usage error, 124 on the time limit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in -h|--help) sed -n '2,8p' "$0"; exec "${PYTHON:-python3}" "$ROOT/benchmarks/gpu_check.py" --help ;; esac
exec timeout "${TIMEOUT:-470}" "${PYTHON:-python3}" "$ROOT/benchmarks/gpu_check.py" "$@"
