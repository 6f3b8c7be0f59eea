#!/bin/sh
# Install torchgeo-ssg2 wheels into the current Python environment and keep the
# PyTorch build that environment already has.
#
#   sh docker/install.sh dist/torchgeo_ssg2-*.whl
#
# Both Dockerfiles run this script on their vendor base image; tests/test_docker.py
# runs it against a fresh virtual environment.
#
# The vendor images (nvcr.io/nvidia/pytorch, rocm/pytorch) ship their own builds of
# torch, torchvision and triton, with versions PyPI does not carry (pre-releases
# and local tags such as 2.10.0a0+b4e4ee81d3). A constraints file pins each of these
# distributions to the exact version installed, so pip installs this package's
# dependencies next to them: a dependency that needs another torch stops the
# install with a conflict instead of replacing the vendor build. pip applies any
# constraints of its own configuration (PIP_CONSTRAINT, pip.conf) as well. The
# script checks afterwards that torch is the same build, from the same place, and
# that the torchgeo-ssg2 command line runs.
#
# Environment: PYTHON (default python3) is the interpreter to install into; pip's
# own PIP_* variables apply.
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 WHEEL [WHEEL ...]" >&2
    exit 2
fi
PYTHON="${PYTHON:-python3}"

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
trap 'exit 1' HUP INT TERM

# name==version of the installed distributions of the PyTorch stack.
"$PYTHON" -m pip list --format=freeze --disable-pip-version-check \
    | grep -i -E '^(torch|torchvision|torchaudio|triton|pytorch-triton|pytorch-triton-rocm)==' \
    > "$constraints" || true
for name in torch torchvision; do
    if ! grep -q -i "^$name==" "$constraints"; then
        echo "error: $PYTHON has no $name; install.sh keeps the environment's PyTorch stack and installs none of it" >&2
        exit 1
    fi
done
echo "Keeping the installed PyTorch stack:"
sed 's/^/  /' "$constraints"

torch_build='import torch; print(torch.__version__, torch.__file__)'
before="$("$PYTHON" -c "$torch_build")"
"$PYTHON" -m pip install --no-cache-dir --disable-pip-version-check \
    --constraint "$constraints" "$@"
after="$("$PYTHON" -c "$torch_build")"
if [ "$before" != "$after" ]; then
    echo "error: the install replaced torch ($before) with $after" >&2
    exit 1
fi

torchgeo-ssg2 --help > /dev/null
echo "torchgeo-ssg2 installed; torch $after"
