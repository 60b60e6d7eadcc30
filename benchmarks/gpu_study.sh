#!/usr/bin/env bash
# A chapter's study trained for real on one GPU, timed: every flow, label set, CG model and simulation
# of `opforce_tutorial.chapters.<STUDY>.STUDY`, then (time permitting) every CG model's long run.
# Run through the device tool (results under $OUT), on the dataset in data/ at the time of the call:
#   STUDY=cln025 BUDGET=540 bash benchmarks/gpu_study.sh      # chapter 3 (STUDY=ala2: chapter 2)
# The chains (`Study.training_chains`: a flow and the CG model of its labels in one `opforce pretrain`
# process, every other CG model and the prior-only run alone) run at once: each model is small, so one chain alone leaves the
# GPU mostly idle. The long runs (`opforce long-run <model> --ns $LONG_NS`, one process per model) follow
# if more than two minutes are left. Needs only torch (no OpenMM).
# Output: $OUT/models.tar.gz (models/ with its registry and long runs: unpack over the checkout), one
# log per chain and long run, and the wall time of each in $OUT/$STUDY.log. DEVICE, CHAINS (names
# separated by "," within a chain and ";" between chains) and LONG_RUNS can be overridden for a rehearsal.
set -u
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
STUDY=${STUDY:?STUDY=ala2 or STUDY=cln025}
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
LONG_NS=${LONG_NS:-1}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
exec > >(tee -a "$OUT/$STUDY.log") 2>&1
opf() { python3 -c "import sys; from opforce_tutorial.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
study() { python3 -c "import importlib; s = importlib.import_module('opforce_tutorial.chapters.$STUDY').STUDY; $1"; }
CHAINS=${CHAINS:-$(study "print(';'.join(','.join(c) for c in s.training_chains()))")}
LONG_RUNS=${LONG_RUNS:-$(study "print(' '.join(s.cg_models()))")}

echo "== $(el) s: machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
nproc; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
sha256sum data/$STUDY.npz
echo "chains: $CHAINS"

run_all() {  # run_all KIND "cmd1;cmd2;...": each command in its own process, all at once, within the budget
    local kind=$1 pids=() i cmd
    IFS=';' read -ra cmds <<< "$2"
    for i in "${!cmds[@]}"; do
        cmd=${cmds[$i]}
        (
            s=$(date +%s)
            timeout $(( BUDGET - $(el) - 20 )) bash -c "$(declare -f opf); opf $cmd --device $DEVICE" > "$OUT/$kind$i.txt" 2>&1
            echo "== $kind $i ($cmd): rc $? after $(( $(date +%s) - s )) s"
        ) &
        pids+=($!)
    done
    wait "${pids[@]}"  # not a bare wait: that would also wait for the tee of the log
}

run_all chain "$(echo "pretrain ${CHAINS//;/;pretrain }" | tr ',' ' ')"
echo "== $(el) s: all chains ended"
grep -h "wrote models" "$OUT"/chain*.txt
if [ $(( BUDGET - $(el) )) -gt 120 ]; then
    run_all long "$(for m in $LONG_RUNS; do printf 'long-run %s --ns %s;' "$m" "$LONG_NS"; done | sed 's/;$//')"
    echo "== $(el) s: long runs ended"
fi
tar czf "$OUT/models.tar.gz" models
echo "== $(el) s: done"
