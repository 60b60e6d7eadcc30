#!/usr/bin/env bash
# Chapter 2 retrained for real on one GPU, timed: every flow, label set, CG model and simulation.
# Run through the device tool (results under $OUT), on the dataset in data/ at the time of the call:
#   BUDGET=540 bash benchmarks/gpu_chapter2.sh
# The seven chains run at once (each model is small, so one chain alone leaves the GPU mostly idle):
# one `opforce pretrain` process per chain, a flow and its CG model in the same process, so the CG
# model's labels come from the flow that was saved. Needs only torch (no OpenMM).
# Output: $OUT/models.tar.gz (models/ with its registry and, time permitting, the reference models'
# 1 ns runs: unpack over the checkout), chain logs, and
# the wall time of every chain in $OUT/chapter2.log. DEVICE and CHAINS can be overridden for a rehearsal.
set -u
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
CHAINS=${CHAINS:-"ala2-cnf-0.05,ala2-cg-cnf-0.05;ala2-cnf-0.1,ala2-cg-cnf-0.1;ala2-coupling-0.05,ala2-cg-coupling-0.05;\
ala2-coupling-0.1,ala2-cg-coupling-0.1;ala2-cg-noise-0.05;ala2-cg-noise-0.1;ala2-cg-reference;ala2-cg-reference-chiral"}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
exec > >(tee -a "$OUT/chapter2.log") 2>&1
opf() { python3 -c "import sys; from opforce_tutorial.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }

echo "== $(el) s: machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
nproc; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
sha256sum data/ala2.npz

IFS=';' read -ra chains <<< "$CHAINS"
pids=()
for i in "${!chains[@]}"; do
    names=${chains[$i]//,/ }
    (
        s=$(date +%s)
        timeout $(( BUDGET - $(el) - 20 )) bash -c "$(declare -f opf); opf pretrain $names --device $DEVICE" \
            > "$OUT/chain$i.txt" 2>&1
        echo "== chain $i ($names): rc $? after $(( $(date +%s) - s )) s"
    ) &
    pids+=($!)
done
wait "${pids[@]}"  # not a bare wait: that would also wait for the tee of the log
echo "== $(el) s: all chains ended"
grep -h "wrote models" "$OUT"/chain*.txt
if [ $(( BUDGET - $(el) )) -gt 120 ]; then  # the retrained models' 1 ns runs (chapter 2's order), if time is left
    timeout $(( BUDGET - $(el) - 30 )) bash -c "$(declare -f opf); opf long-run ala2-cg-reference ala2-cg-reference-chiral \
        ala2-cg-noise-0.05 ala2-cg-cnf-0.05 ala2-cg-coupling-0.05 --ns 1 --device $DEVICE" > "$OUT/long_runs.txt" 2>&1
    echo "== $(el) s: long runs rc $?"
fi
tar czf "$OUT/models.tar.gz" models
echo "== $(el) s: done"
