#!/usr/bin/env bash
# Chapter 3 (CLN025) trained for real on one GPU, timed: every flow, label set, CG model and simulation
# of the study `opforce_tutorial.chapters.cln025.STUDY` (chains listed from the catalog, a flow and its
# CG model in one `opforce pretrain` process so the CG model's labels come from the flow it saved).
# Run through the device tool (results under $OUT):   BUDGET=540 bash benchmarks/gpu_chapter3.sh
# Output: $OUT/models.tar.gz (models/ with its registry: unpack over the checkout), chain logs, and the
# wall time of every chain in $OUT/chapter3.log. DEVICE and CHAINS can be overridden for a rehearsal.
set -u
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
exec > >(tee -a "$OUT/chapter3.log") 2>&1
opf() { python3 -c "import sys; from opforce_tutorial.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
# one chain per CG model: "flow,cg-model" for the flow kernels, the CG model alone otherwise
CHAINS=${CHAINS:-$(python3 -c "
from opforce_tutorial.chapters import cln025 as c
s = c.STUDY
chains = [f'{s.kernel_name(k, g)},{s.cg_name(k, g)}' for g in s.noise_stds for k in ('cnf', 'coupling')]
chains += [s.cg_name('noise', g) for g in s.noise_stds] + [s.cg_name('reference')]
print(';'.join(chains))")}

echo "== $(el) s: machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
nproc; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
sha256sum data/cln025.npz
echo "chains: $CHAINS"

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
wait "${pids[@]}"
echo "== $(el) s: all chains ended"
grep -h "wrote models" "$OUT"/chain*.txt
tar czf "$OUT/models.tar.gz" models
echo "== $(el) s: done"
