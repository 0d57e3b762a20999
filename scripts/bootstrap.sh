# Sourced by scripts/demo and scripts/test: everything a fresh machine needs, nothing system-wide.
#  1. uv (on PATH, else installed with pip into .cache/uv, pinned);
#  2. the locked dependency set into .venv (uv sync --locked), with bytecode compiled;
#  3. a Consul binary (scripts/get-consul), exported as CONSUL_BIN.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
uv_version=0.13.9
export UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1

if command -v uv >/dev/null 2>&1; then
  uv=$(command -v uv)
elif [ -x "$root/.cache/uv/bin/uv" ]; then
  uv="$root/.cache/uv/bin/uv"
else
  echo "bootstrap: installing uv $uv_version into .cache/uv" >&2
  python3 -m venv "$root/.cache/uv" >&2
  "$root/.cache/uv/bin/python" -m pip install --quiet "uv==$uv_version" >&2
  uv="$root/.cache/uv/bin/uv"
fi

"$uv" sync --locked --quiet ${UV_SYNC_ARGS:-}
# The project itself is installed editable, so compile its bytecode too: start-up time is part of the product.
.venv/bin/python -m compileall -q manifest_runner >/dev/null
export PATH="$root/.venv/bin:$PATH"

if [ "${CONSUL_MANIFEST_SKIP_CONSUL:-0}" != 1 ]; then  # the quick suite needs no agent
  CONSUL_BIN=$("$root/scripts/get-consul")
  export CONSUL_BIN
fi
