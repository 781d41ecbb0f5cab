#!/usr/bin/env bash
# Local storage throughput (group commit vs one transaction per call), side by side with ratios.
# Usage: bench/storage.sh [operations per case] [concurrent tasks]
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p oven --bench storage -- "${1:-20000}" "${2:-16}"
