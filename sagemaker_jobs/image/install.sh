#!/bin/sh
# Installs the runtime of every SageMaker job and of the endpoint into PREFIX, from the lock file:
#   PREFIX/venv      the locked versions of the project's light core and its ml, local and lake groups,
#                    every file checked against the lock's hashes; nothing is installed at job start
#   PREFIX/code      our packages (shared, sagemaker_jobs, step_functions), compiled
#   PREFIX/bin       SageMaker's entrypoints: `train` and `serve` (what SageMaker runs in a custom
#                    image), and `job MODULE ARGS...` (the processing and monitoring jobs)
# The Dockerfile beside this script runs it into /opt/claims-risk; tests run it into a fresh folder
# offline (UV_OFFLINE=1 installs from uv's cache, which `make install` filled from the same lock).
#
# usage: install.sh PREFIX [REPO] [CODE_VERSION]     (UV and PYTHON override the tools it uses)
set -eu
prefix=$(realpath -m "$1")
repo=$(realpath "${2:-.}")
code_version=${3:-unknown}
uv=${UV:-uv}
python=${PYTHON:-python3}

mkdir -p "$prefix/bin" "$prefix/code"
"$uv" export --project "$repo" --frozen --no-default-groups --group ml --group local --group lake \
    --no-emit-project --format requirements-txt --quiet --output-file "$prefix/requirements.txt"
# uv sync installs exactly the lock's resolution for these groups, each file checked against the
# lock's hash; the project itself is not installed (its code goes to PREFIX/code below).
UV_PROJECT_ENVIRONMENT="$prefix/venv" "$uv" sync --project "$repo" --frozen --quiet \
    --no-default-groups --group ml --group local --group lake --no-install-project --python "$python"

# Our code: the packages the jobs and the inference script import, without caches or tests.
rm -rf "$prefix/code"
mkdir -p "$prefix/code"
(cd "$repo" && find shared sagemaker_jobs step_functions -type f \( -name '*.py' -o -name '*.json' \) \
    -not -path '*/__pycache__/*' | sort | tar -cf - -T -) | tar -C "$prefix/code" -xf -
"$prefix/venv/bin/python" -m compileall -q "$prefix/code"
printf '%s\n' "$code_version" > "$prefix/code/CODE_VERSION"

entrypoint() {  # NAME, then what follows `python -m` (a module, or nothing: the caller names it)
    cat > "$prefix/bin/$1" <<SCRIPT
#!/bin/sh
export PYTHONPATH="$prefix/code" PYTHONUNBUFFERED=1
export CODE_VERSION="\${CODE_VERSION:-$code_version}"
exec "$prefix/venv/bin/python" -m $2 "\$@"
SCRIPT
    chmod 0755 "$prefix/bin/$1"
}
entrypoint train sagemaker_jobs.training.train
entrypoint serve sagemaker_jobs.inference.serve
entrypoint job ""
echo "claims-risk runtime installed in $prefix ($code_version)"
