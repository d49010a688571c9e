#!/usr/bin/env bash
# Run every benchmark of the package, one after the other, and keep their output.
#   bash benchmarks/run_all.sh            # writes benchmarks/results_<host>.txt
set -euo pipefail
cd "$(dirname "$0")/.."
out="benchmarks/results_$(hostname).txt"
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m), $(nproc) cores, $(python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
  work=$(mktemp -d)  # data_loading's cases, which patch_reading reads again
  for bench in maps setup_maps data_loading patch_reading train_step device_maps many_classes map_format real_size; do
    echo; echo "## benchmarks/$bench.py"
    case $bench in
      data_loading|patch_reading) python "benchmarks/$bench.py" --workdir "$work" ;;
      *) python "benchmarks/$bench.py" ;;
    esac
  done
  rm -rf "$work"
} 2>&1 | tee "$out"
echo "written: $out"
