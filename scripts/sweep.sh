#!/usr/bin/env bash
# Paper sweep: every METHOD x dataset x bit length, one run folder per cell.
#
#   bash scripts/sweep.sh METHOD[,METHOD...] [--datasets coco,flickr25k,nuswide] [--bits 16,32,64]
#                         [--result-dir result] [--keep-going] [-- extra main.py flags]
#
# Cell folder: <result-dir>/<METHOD>/<dataset>/<bits>/sweep/, METHOD spelt as its folder under train/. A cell
# whose summary.json exists is skipped, so rerunning an interrupted sweep finishes only the missing cells; a cell
# cut off after at least one epoch continues from its last.pt (--resume). It stops at the first failing cell
# unless --keep-going.
# Then: python scripts/summarize.py <result-dir>
set -u -o pipefail

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
fail() { echo "sweep: error: $*" >&2; exit 2; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; -*) fail "the first argument must be METHOD[,METHOD...] (got '$1')" ;; esac
methods="$1"; shift
datasets="coco,flickr25k,nuswide"; bits="16,32,64"; result_dir="result"; keep_going=0; extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --datasets) [ $# -ge 2 ] || fail "--datasets needs a value"; datasets="$2"; shift 2 ;;
        --bits) [ $# -ge 2 ] || fail "--bits needs a value"; bits="$2"; shift 2 ;;
        --result-dir) [ $# -ge 2 ] || fail "--result-dir needs a value"; result_dir="$2"; shift 2 ;;
        --keep-going) keep_going=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) usage ;;
        *) fail "unknown option '$1' (main.py flags go after --)" ;;
    esac
done

here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
IFS=',' read -r -a method_list <<< "$methods"
# canonical names (folder names): `dsph` and `DSPH` share one cell folder; an unknown method stops here
canonical="$(cd "$here" && "$python" -m train.registry "${method_list[@]}")" || exit 2
mapfile -t method_list <<< "$canonical"
IFS=',' read -r -a dataset_list <<< "$datasets"
IFS=',' read -r -a bit_list <<< "$bits"
for b in "${bit_list[@]}"; do [[ "$b" =~ ^[0-9]+$ ]] || fail "--bits takes numbers like 16,32,64 (got '$b')"; done

total=$(( ${#method_list[@]} * ${#dataset_list[@]} * ${#bit_list[@]} ))
cell=0; done_cells=0; skipped=0; failed=()
for method in "${method_list[@]}"; do
    for dataset in "${dataset_list[@]}"; do
        for b in "${bit_list[@]}"; do
            cell=$((cell + 1))
            dir="$result_dir/$method/$dataset/$b/sweep"
            if [ -f "$dir/summary.json" ]; then
                echo "[$cell/$total] $method $dataset $b bits: done before, skipped"
                skipped=$((skipped + 1)); continue
            fi
            resume=()
            [ -f "$dir/last.pt" ] && resume=(--resume "$dir")
            echo "[$cell/$total] $method $dataset $b bits -> $dir${resume:+ (resuming)}"
            "$python" "$here/main.py" --method "$method" --dataset "$dataset" --output-dim "$b" --save-dir "$dir" \
                "${resume[@]}" "${extra[@]}"
            status=$?
            if [ $status -eq 0 ]; then
                done_cells=$((done_cells + 1))
            elif [ $status -eq 130 ]; then
                echo "sweep: interrupted at $method $dataset $b bits; rerun the same command to continue" >&2
                exit 130
            else
                failed+=("$method $dataset $b")
                echo "sweep: cell $method $dataset $b bits failed (exit $status); its log: $dir/train.log" >&2
                if [ $keep_going -eq 0 ]; then
                    echo "sweep: stopped; fix the cell and rerun (finished cells are skipped), or add --keep-going" >&2
                    exit 1
                fi
            fi
        done
    done
done
echo "sweep: $done_cells cells run, $skipped skipped, ${#failed[@]} failed of $total"
for f in "${failed[@]}"; do echo "  failed: $f" >&2; done
[ ${#failed[@]} -eq 0 ] || exit 1
echo "tables: $python scripts/summarize.py $result_dir"
