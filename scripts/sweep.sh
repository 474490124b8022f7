#!/usr/bin/env bash
# Paper sweep: every METHOD x dataset x bit length (x training seed), one run folder per cell.
#
#   bash scripts/sweep.sh METHOD[,METHOD...] [--datasets coco,flickr25k,nuswide] [--bits 16,32,64]
#                         [--seeds 1,2,3] [--result-dir result] [--keep-going] [-- extra main.py flags]
#   PYTHON=/path/to/env/bin/python bash scripts/sweep.sh ...      # the interpreter to run main.py with
#
# Cell folder: <result-dir>/<METHOD>/<dataset>/<bits>/sweep/, METHOD spelt as its folder under train/. With
# --seeds, one cell per seed in .../sweep/seed<N>/, trained with --train-seed N on the same split. A cell whose
# summary.json exists is skipped, so rerunning an interrupted sweep finishes only the missing cells; a cell cut off
# after at least one epoch continues from its last.pt (--resume). It stops at the first failing cell unless
# --keep-going. Python: $PYTHON if set, else the active virtual environment's, else python3 (or python) on PATH;
# the sweep stops before the first cell if that Python cannot import torch.
# Then: python scripts/summarize.py <result-dir>
set -u -o pipefail

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
fail() { echo "sweep: error: $*" >&2; exit 2; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; -*) fail "the first argument must be METHOD[,METHOD...] (got '$1')" ;; esac
methods="$1"; shift
datasets="coco,flickr25k,nuswide"; bits="16,32,64"; seeds=""; result_dir="result"; keep_going=0; extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --datasets) [ $# -ge 2 ] || fail "--datasets needs a value"; datasets="$2"; shift 2 ;;
        --bits) [ $# -ge 2 ] || fail "--bits needs a value"; bits="$2"; shift 2 ;;
        --seeds) [ $# -ge 2 ] || fail "--seeds needs a value"; seeds="$2"; shift 2 ;;
        --result-dir) [ $# -ge 2 ] || fail "--result-dir needs a value"; result_dir="$2"; shift 2 ;;
        --keep-going) keep_going=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) usage ;;
        *) fail "unknown option '$1' (main.py flags go after --)" ;;
    esac
done
IFS=',' read -r -a bit_list <<< "$bits"
for b in "${bit_list[@]}"; do [[ "$b" =~ ^[0-9]+$ ]] || fail "--bits takes numbers like 16,32,64 (got '$b')"; done
seed_list=("")  # one cell without --train-seed
if [ -n "$seeds" ]; then
    IFS=',' read -r -a seed_list <<< "$seeds"
    for s in "${seed_list[@]}"; do [[ "$s" =~ ^[0-9]+$ ]] || fail "--seeds takes numbers like 1,2,3 (got '$s')"; done
    for flag in "${extra[@]}"; do
        case "$flag" in --train-seed|--train-seed=*) fail "--seeds sets --train-seed per cell; drop it after --" ;; esac
    done
fi

# The interpreter: $PYTHON, else the active virtual environment's, else python3 / python on PATH.
if [ -n "${PYTHON:-}" ]; then
    python="$PYTHON"; chosen_by="\$PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    python="$VIRTUAL_ENV/bin/python"; chosen_by="the active virtual environment"
elif command -v python3 > /dev/null; then
    python="$(command -v python3)"; chosen_by="python3 on PATH"
elif command -v python > /dev/null; then
    python="$(command -v python)"; chosen_by="python on PATH"
else
    fail "no Python found (no \$PYTHON, no active virtual environment, no python3 or python on PATH); run PYTHON=/path/to/env/bin/python bash $0 ..."
fi
command -v "$python" > /dev/null || fail "PYTHON=$python is not an executable; set PYTHON to the project environment's python"
"$python" -c "import torch" > /dev/null 2>&1 \
    || fail "$python ($chosen_by) cannot import torch; activate the project's environment or choose its Python with PYTHON=/path/to/env/bin/python bash $0 ..."

here="$(cd "$(dirname "$0")/.." && pwd)"
IFS=',' read -r -a method_list <<< "$methods"
# canonical names (folder names): `dsph` and `DSPH` share one cell folder; an unknown method stops here
canonical="$(cd "$here" && "$python" -m train.registry "${method_list[@]}")" || exit 2
mapfile -t method_list <<< "$canonical"
IFS=',' read -r -a dataset_list <<< "$datasets"

total=$(( ${#method_list[@]} * ${#dataset_list[@]} * ${#bit_list[@]} * ${#seed_list[@]} ))
cell=0; done_cells=0; skipped=0; failed=()
for method in "${method_list[@]}"; do
    for dataset in "${dataset_list[@]}"; do
        for b in "${bit_list[@]}"; do
            for seed in "${seed_list[@]}"; do
                cell=$((cell + 1))
                name="$method $dataset $b bits${seed:+ seed $seed}"
                dir="$result_dir/$method/$dataset/$b/sweep${seed:+/seed$seed}"
                if [ -f "$dir/summary.json" ]; then
                    echo "[$cell/$total] $name: done before, skipped"
                    skipped=$((skipped + 1)); continue
                fi
                flags=()
                [ -n "$seed" ] && flags+=(--train-seed "$seed")
                [ -f "$dir/last.pt" ] && flags+=(--resume "$dir")
                echo "[$cell/$total] $name -> $dir$([ -f "$dir/last.pt" ] && echo ' (resuming)')"
                "$python" "$here/main.py" --method "$method" --dataset "$dataset" --output-dim "$b" --save-dir "$dir" \
                    "${flags[@]}" "${extra[@]}"
                status=$?
                if [ $status -eq 0 ]; then
                    done_cells=$((done_cells + 1))
                elif [ $status -eq 130 ]; then
                    echo "sweep: interrupted at $name; rerun the same command to continue" >&2
                    exit 130
                else
                    failed+=("$name")
                    if [ -f "$dir/train.log" ]; then
                        echo "sweep: cell $name failed (exit $status); its log: $dir/train.log" >&2
                    else
                        echo "sweep: cell $name failed (exit $status) before writing a log; its error is above" >&2
                    fi
                    if [ $keep_going -eq 0 ]; then
                        echo "sweep: stopped; fix the cell and rerun (finished cells are skipped), or add --keep-going" >&2
                        exit 1
                    fi
                fi
            done
        done
    done
done
echo "sweep: $done_cells cells run, $skipped skipped, ${#failed[@]} failed of $total"
for f in "${failed[@]}"; do echo "  failed: $f" >&2; done
[ ${#failed[@]} -eq 0 ] || exit 1
echo "tables: $python $here/scripts/summarize.py $result_dir"
