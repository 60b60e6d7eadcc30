#!/usr/bin/env bash
# One GPU lease, one prepared script (run through the device tool, results under $OUT):
#   1. OpenMM's platforms (CUDA through the openmm-cuda-13 plugin against the image's CUDA 13 libraries,
#      else OpenCL, else CPU) and a probe of CLN025 throughput for several numbers of copies per System;
#   2. the GPU benchmarks (benchmarks/kernels.py, cg_simulation.py, cnf_labels.py) on an otherwise idle GPU;
#   3. CLN025 copies MD at 340 K on the fastest setting until the time is up, while the CUDA-parametrised
#      tests run beside it.
# Needs the wheels in .whl/ (openmm 8.6.1, openmm-cuda-13 8.6.1, PeptideBuilder, biopython; see
# data/README.md) carried along. BUDGET is the command's own time in seconds; DRY=1 skips the wheels (a
# rehearsal on a machine that has the packages). Every step can be resized or skipped by its variable below;
# the plan for a lease with chapter 2 to retrain is in README.md ("CPU and GPU").
set -u
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
BUDGET=${BUDGET:-530}
RUN=${RUN:-data/runs/cln025_340K_gpu_s1}
PROBE=${PROBE-"1 32 96"}   # PROBE= (empty) skips the probe
BENCH_KERNELS_S=${BENCH_KERNELS_S:-80}   # session 3: kernels.py finished inside 80 s on an H200
BENCH_CG_S=${BENCH_CG_S:-150}            # session 3: 50 s was too short for cg_simulation.py
BENCH_CNF_S=${BENCH_CNF_S:-150}          # cnf_labels.py: score vs inverse CNF labels, chunks >= 512 (not yet run on a GPU)
TESTS_S=${TESTS_S:-240}                  # slot of the CUDA tests beside the MD (0: skip)
LOG=$OUT/session.log
exec > >(tee -a "$LOG") 2>&1

[ -n "${DRY:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
SITE=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
export LD_LIBRARY_PATH=$(ls -d "$SITE"/nvidia/*/lib "$SITE"/nvidia/cu13/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}
export PATH=$PATH:/usr/local/cuda/bin
opf() { python3 -c "import sys; from opforce_tutorial.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }

echo "== $(el) s: machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nproc; python3 -c "import torch, openmm; print('torch', torch.__version__, 'openmm', openmm.__version__)"
PLATFORM=$(python3 - <<'EOF'
import sys
import openmm as mm
print("plugin load failures:", mm.Platform.getPluginLoadFailures(), file=sys.stderr)
for name in ("CUDA", "OpenCL"):
    try:
        s = mm.System()
        s.addParticle(1.0)
        mm.Context(s, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName(name))
        print(name)
        break
    except Exception as err:
        print(f"{name} unavailable: {err}", file=sys.stderr)
else:
    print("CPU")
EOF
)
echo "== $(el) s: OpenMM platform $PLATFORM"

if [ -n "$PROBE" ]; then
    echo "== $(el) s: probe"
    timeout 120 bash -c "$(declare -f opf); opf data copies cln025 --probe $PROBE --platform $PLATFORM \
        --start-from data/runs/cln025_340K_ext_s0 --ns 1 --out /tmp/probe" | grep '^{' | tee $OUT/probe.jsonl
    K=$(python3 -c "
import json
rows = [json.loads(l) for l in open('$OUT/probe.jsonl')]
print(max(rows, key=lambda r: r['ns_day_total'])['n_copies'] if rows else 32)")
else
    K=32  # the best of session 3's probe on an H200 (ignored when RUN exists: a run resumes as it was made)
fi
echo "== $(el) s: copies per System $K"

echo "== $(el) s: GPU benchmarks"
# a slot of 0 s skips that benchmark (timeout 0 would mean no limit)
[ "$BENCH_KERNELS_S" -gt 0 ] && timeout $BENCH_KERNELS_S python3 benchmarks/kernels.py > /dev/null \
    && cp benchmarks/results/kernels_cuda.json $OUT/
[ "$BENCH_CG_S" -gt 0 ] && timeout $BENCH_CG_S python3 benchmarks/cg_simulation.py > /dev/null \
    && cp benchmarks/results/cg_simulation_cuda.json $OUT/
[ "$BENCH_CNF_S" -gt 0 ] && timeout $BENCH_CNF_S python3 benchmarks/cnf_labels.py > /dev/null \
    && cp benchmarks/results/cnf_labels_cuda.json $OUT/

MINUTES=$(python3 -c "print(round(($BUDGET - $(el) - 25) / 60, 2))")
echo "== $(el) s: CLN025 MD, $K copies on $PLATFORM for $MINUTES min"
opf data copies cln025 --copies "$K" --temperature 340 --ns 1000 --out "$RUN" --platform "$PLATFORM" \
    --start-from data/runs/cln025_340K_ext_s0 --seed 1 --max-minutes "$MINUTES" > $OUT/md.txt 2>&1 &
MD=$!

if [ "$TESTS_S" -gt 0 ]; then
    echo "== $(el) s: CUDA tests beside the MD"
    timeout $TESTS_S python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_cg.py tests/test_cnf.py \
        tests/test_coupling.py tests/test_kernels.py tests/test_simulation.py tests/test_cg_pipeline.py \
        > $OUT/pytest_cuda.txt 2>&1
    tail -3 $OUT/pytest_cuda.txt
fi

wait $MD
echo "== $(el) s: MD finished (rc $?)"
tr '\r' '\n' < $OUT/md.txt | tail -2
tar czf $OUT/cln025_gpu_run.tar.gz "$RUN"
ls -la $OUT
echo "== $(el) s: done"
