#!/usr/bin/env bash
# The GPU check: one call on a CUDA machine (an H100 or H200, no internet, torch and torchvision but
# no Hydra) that installs what the machine lacks from carried wheels, runs the CUDA tests and the
# benchmarks, each under its own time limit, and writes everything under one folder with a summary
# of targets against figures (docs/performance.md, "The GPU check").
#
#   scripts/gpu-check.sh --prepare     # here, with PyPI: download the wheels into .whl/ (ignored by git)
#   scripts/gpu-check.sh               # on the GPU machine: the check (about 8 minutes at most)
#   scripts/gpu-check.sh --dry-run     # on a CPU: every step at tiny sizes, in about a minute
#
# Options: --out DIR (default outputs/gpu-check); environment: PYTHON (default .venv/bin/python if
# there, else python3), STEPS (the steps to run, default all: env deps imports tests benchmark levers
# probe study), BUDGET_<STEP> (seconds), BUDGET_TOTAL (470: no step runs past it; the study takes
# what is left of it).
# With $OUT set (the device tool's folder), the folder is also packed into $OUT/gpu-check.tar.gz
# after every step, and the summary copied to $OUT/gpu-check-summary.txt.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

MODE=check
DIR=outputs/gpu-check
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) MODE=dry-run ;;
        --prepare) MODE=prepare ;;
        --out) DIR=${2:?--out needs a folder}; shift ;;
        -h|--help) sed -n '2,/^set/{/^#/p}' "$0" | cut -c3-; exit 0 ;;
        *) echo "gpu-check.sh: unknown option $1; allowed: --dry-run, --prepare, --out DIR, --help" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS=$ROOT/.whl
# What the GPU machine lacks or may lack (docs/performance.md): Hydra and what it needs, timm and peft,
# pytest and what it needs. The versions are this checkout's environment's, the ones its tests pass with.
CARRIED="hydra-core omegaconf antlr4-python3-runtime timm peft safetensors pytest pluggy iniconfig"

prepare() {
    local fresh=$ROOT/.whl.new specs=() name version
    for name in $CARRIED; do
        version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") \
            || { echo "gpu-check.sh --prepare: $name is not installed in $PYTHON (run scripts/setup.sh)" >&2; return 1; }
        specs+=("$name==$version")
    done
    rm -rf "$fresh" && mkdir -p "$fresh" || return 1
    for spec in "${specs[@]}"; do
        # For the GPU machine's Python 3.12 on x86-64; a project with no wheel (antlr4's runtime) is built here.
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$fresh" "$spec" 2>/dev/null \
        || "$PYTHON" -m pip wheel -q --no-deps -w "$fresh" "$spec" \
        || { echo "gpu-check.sh --prepare: no wheel of $spec could be downloaded or built" >&2; return 1; }
    done
    rm -rf "$WHEELS" && mv "$fresh" "$WHEELS" || return 1
    ls -l "$WHEELS"
    echo "$(du -sh "$WHEELS" | cut -f1) in .whl/ (carry it: the device tool's carry list names .whl)"
}

if [ "$MODE" = prepare ]; then
    prepare
    exit $?
fi

DIR=$(realpath -m "$DIR")
PARENT_OF=${DIR%/}  # "" for /: every path is in it
case $ROOT/ in "$PARENT_OF"/*)
    echo "gpu-check.sh: --out $DIR holds the checkout, and the check empties its folder first; name a folder of its own" >&2
    exit 2 ;;
esac
rm -rf "$DIR" && mkdir -p "$DIR" || exit 2
[ "$MODE" = dry-run ] && touch "$DIR/DRY_RUN"
STEPS=${STEPS:-env deps imports tests benchmark levers probe study}
STARTED=$SECONDS
SITE=/tmp/gpu-check-site  # where carried wheels go (pip --target); none left from an earlier check
rm -rf "$SITE"

wanted() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

pack() {
    [ -n "${OUT:-}" ] || return 0
    tar -czf "$OUT/gpu-check.tar.gz.tmp" -C "$(dirname "$DIR")" "$(basename "$DIR")" \
        && mv "$OUT/gpu-check.tar.gz.tmp" "$OUT/gpu-check.tar.gz"
}

record() {  # name, exit or 'skipped', seconds, budget, note
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$DIR/steps.tsv"
    pack
}

skip() {  # name, why
    echo "== $1: skipped: $2"
    record "$1" skipped 0 "" "$2"
}

# step NAME BUDGET COMMAND...: runs COMMAND under `timeout BUDGET`, its output in NAME.log and on
# the console; its exit is recorded whatever it is, and the check goes on.
step() {
    local name=$1 budget=$2 start=$SECONDS rc
    shift 2
    if ! wanted "$name"; then skip "$name" "not in STEPS"; return 0; fi
    if [ "$MODE" = check ]; then  # no step runs past BUDGET_TOTAL, whatever the steps before it took
        local left=$(( $(budget total 470) - (SECONDS - STARTED) ))
        if [ "$left" -lt 10 ]; then skip "$name" "no time left of BUDGET_TOTAL"; return 0; fi
        [ "$budget" -gt "$left" ] && budget=$left
    fi
    echo "== $name (budget ${budget} s): $*"
    timeout --kill-after=10 "$budget" "$@" 2>&1 | tee "$DIR/$name.log"
    rc=${PIPESTATUS[0]}
    local note=""
    case $rc in 0) ;; 124|137) note="timed out after ${budget} s" ;; *) note="failed: see $name.log" ;; esac
    record "$name" "$rc" $((SECONDS - start)) "$budget" "$note"
}

budget() {  # BUDGET_<NAME> if set, else the default (in a dry run, 300 s: a busy CPU is slow, not wrong)
    local var="BUDGET_$(echo "$1" | tr '[:lower:]' '[:upper:]')" default=$2
    [ "$MODE" = dry-run ] && default=300
    echo "${!var:-$default}"
}

versions() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo 'not a git checkout') $(git status --porcelain 2>/dev/null | wc -l) changed files"
    if command -v nvidia-smi >/dev/null; then nvidia-smi; nvidia-smi -q | head -60; else echo "nvidia-smi: not here"; fi
    "$PYTHON" -c "import platform, torch, torchvision
print('python', platform.python_version(), 'torch', torch.__version__, 'torchvision', torchvision.__version__,
      'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
print('cuda available:', torch.cuda.is_available(), *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))"
    "$PYTHON" -m pip list 2>/dev/null || true
}

# Install the carried wheels that meet requirements this Python does not (scripts/gpu_check.py needs).
deps() {
    local needed
    needed=$("$PYTHON" scripts/gpu_check.py needs "$WHEELS") || echo "(some requirements stay unmet: see above)"
    if [ -z "$needed" ]; then
        echo "every requirement is met: nothing to install"
    else
        echo "installing into $SITE:" $needed
        # shellcheck disable=SC2086
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $needed || return 1
    fi
    if [ "$MODE" = dry-run ]; then  # that every carried wheel installs, into a folder nothing reads
        if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
            "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$DIR/wheels-check" \
                "$WHEELS"/*.whl && echo "every carried wheel installs" && rm -rf "$DIR/wheels-check" || return 1
        else
            echo "no wheels in .whl/ (scripts/gpu-check.sh --prepare makes them): the installation itself is not tried"
        fi
    fi
    # A check that fails here says which requirement is unmet, in one line, and the steps go on.
    "$PYTHON" scripts/gpu_check.py needs "$WHEELS" >/dev/null
}

echo "gpu-check ($MODE) into $DIR, python: $PYTHON, steps: $STEPS"
mkdir -p "$SITE"
export PYTHONPATH=$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

export PYTHON WHEELS SITE MODE DIR
export -f versions deps
step env "$(budget env 30)" bash -c versions
step deps "$(budget deps 60)" bash -c deps
step imports "$(budget imports 60)" "$PYTHON" -c "import hydra, omegaconf, timm, peft, pytest, torch
import transferlab.run, transferlab.config
print('hydra', hydra.__version__, 'omegaconf', omegaconf.__version__, 'timm', timm.__version__, 'peft', peft.__version__,
      'pytest', pytest.__version__, 'transferlab from', transferlab.run.__file__)
print('cuda:', torch.cuda.is_available())"

HAS_CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$MODE" = check ] && [ "$HAS_CUDA" != 1 ]; then
    echo "gpu-check.sh: torch sees no CUDA device here; on a CPU run scripts/gpu-check.sh --dry-run" | tee -a "$DIR/steps.log" >&2
    "$PYTHON" scripts/gpu_check.py summary "$DIR" | tee "$DIR/summary.txt"
    pack
    exit 2
fi

# The CUDA tests: every file that marks tests gpu. Without CUDA they skip (the dry run checks that they
# are collected, and that the report reads their JUnit XML).
TEST_FILES=$(grep -l "pytest.mark.gpu" tests/test_*.py | tr '\n' ' ')
[ "$HAS_CUDA" = 1 ] || echo "no CUDA: the gpu tests are collected and skip"
# shellcheck disable=SC2086
step tests "$(budget tests 150)" "$PYTHON" -m pytest -m gpu $TEST_FILES -p no:cacheprovider -q -rs \
    --junitxml="$DIR/gpu-tests.xml"

if [ "$MODE" = dry-run ]; then
    # Tiny sizes on the CPU, AlexNet alone; no torch.compile (a minute a model on a CPU) and no study
    # (12 whole runs of three large models: minutes on a CPU): those need a GPU to be worth running.
    BENCH=(--mode tiny --repeats 1 --workers 0 --models alexnet --images 32)
    step benchmark "$(budget benchmark 150)" "$PYTHON" scripts/benchmark.py "${BENCH[@]}" --whole-run --out "$DIR/benchmark"
    step levers "$(budget levers 60)" "$PYTHON" scripts/benchmark.py "${BENCH[@]}" --no-pipelines --levers \
        --eval-batch-sizes 32 --out "$DIR/levers"
    step probe "$(budget probe 90)" "$PYTHON" scripts/benchmark_probe.py --image-size 32 --images 100 --test-images 20 \
        --epochs 1 --batch-size 32 --steps 1 --out "$DIR/probe.json"
    skip study "the 12-run study takes minutes on a CPU (--compile too): they run on the GPU only"
else
    # The issue's `--whole-run --study --compile` and `--levers`, as three calls with a limit each:
    # every model's eager figures first (the targets), then one whole run, then the compiled figures.
    BENCH=(--mode gpu --repeats 3)
    step benchmark "$(budget benchmark 150)" "$PYTHON" scripts/benchmark.py "${BENCH[@]}" --whole-run --compile \
        --out "$DIR/benchmark"
    step levers "$(budget levers 60)" "$PYTHON" scripts/benchmark.py --mode gpu --repeats 2 --no-pipelines --levers \
        --models resnet18 alexnet vgg16 --out "$DIR/levers"
    step probe "$(budget probe 90)" "$PYTHON" scripts/benchmark_probe.py --device cuda --precision bf16 \
        --image-size 224 --images 25000 --test-images 10000 --out "$DIR/probe.json"
    # The study takes what is left of the total (it saves each run's seconds as it ends).
    step study "$(budget total 470)" "$PYTHON" scripts/benchmark.py "${BENCH[@]}" --no-pipelines --study \
        --out "$DIR/study"
fi

"$PYTHON" scripts/gpu_check.py summary "$DIR" | tee "$DIR/summary.txt"
if [ -n "${OUT:-}" ]; then cp "$DIR/summary.txt" "$OUT/gpu-check-summary.txt"; fi
pack
echo "everything is in $DIR${OUT:+ (and packed into $OUT/gpu-check.tar.gz)}"
# Exit 0 only when every step that ran exited 0.
! cut -f2 "$DIR/steps.tsv" | grep -qvE '^(0|skipped)$'
