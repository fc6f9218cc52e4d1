#!/usr/bin/env bash
# Fills .official/ (git-ignored) with everything experiments/bench_official.py needs to run the
# official PyTorch MSINN (hytu99/MSINN-VRLIC) on a machine that has torch but no network:
#
#   .official/COMMIT                  full hash of the official commit copied below
#   .official/{models/,train.py,eval.py,README.md}   the official source, unmodified
#   .official/dist/compressai-1.2.6.tar.gz           CompressAI sdist (PyPI has no wheel of 1.2.6);
#                                                    bench_official.py builds it there with pip
#   .official/dist/{pybind11,wheel}-*.whl            the build tools that build uses (pure Python;
#                                                    wheel 0.45 gives old setuptools bdist_wheel)
#   .official/dist/pytorch_msssim-1.0.0-*.whl        imported by compressai.losses (pure Python)
#   .official/kodim01.png                            image bench_codec.py times (if shared/ has it)
#
# Every download is pinned by version and sha256. Usage, from anywhere:
#
#   bash experiments/prepare_official.sh
#   MIRROR=/path/to/MSINN-VRLIC.git PYTHON=/path/to/python bash experiments/prepare_official.sh
#
# MIRROR is a clone (bare or not) of the official repository; PYTHON is an interpreter with pip
# and setuptools (pip prepares the sdist's metadata, which imports pybind11 and, with setuptools
# older than 70.1, wheel: the downloaded build tools are put on PYTHONPATH for that).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${DEST:-$ROOT/.official}
MIRROR=${MIRROR:-$ROOT/../MSINN-VRLIC}  # e.g. git clone https://github.com/hytu99/MSINN-VRLIC
COMMIT=${COMMIT:-ed78e39}
PYTHON=${PYTHON:-python3}
KODIM01=${KODIM01:-$ROOT/../shared/datasets/kodak/kodim01.png}

# name==version and sha256 of each distribution carried (the sha256 values are PyPI's).
COMPRESSAI="compressai==1.2.6 --hash=sha256:1f87e0030d42016174f0e956a371927645661334483568f96ab7cff8c2dd0633"
PYBIND11="pybind11==3.1.0 --hash=sha256:b8488090f8acffbcb6b5d6a85571a6827a0a2981ffb75e5a0b27b87c4a6b7dd0"
WHEEL="wheel==0.45.1 --hash=sha256:708e7481cc80179af0e556bbf0cc00b8444c7321e2700b8d8580231d13017248"
MSSSIM="pytorch_msssim==1.0.0 --hash=sha256:0b4b7bbf7035fe9dc8084244237aac13b1f104852c45b63a7e9fab4363bede54"

if [ -d "$MIRROR/objects" ]; then GIT=(git --git-dir="$MIRROR"); else GIT=(git -C "$MIRROR"); fi
FULL=$("${GIT[@]}" rev-parse --verify "$COMMIT^{commit}") || {
  echo "official commit $COMMIT not found in MIRROR=$MIRROR" >&2; exit 1; }

rm -rf "$DEST"
mkdir -p "$DEST/dist"
"${GIT[@]}" archive "$FULL" models train.py eval.py README.md | tar -x -C "$DEST"
echo "$FULL" >"$DEST/COMMIT"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pip_download() {  # pip_download DIR [pip options] -- "name==version --hash=..."
  local dir=$1; shift
  local spec=${*: -1}
  printf '%s\n' "$spec" >"$TMP/req.txt"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --dest "$dir" "${@:1:$#-1}" -r "$TMP/req.txt"
}
pip_download "$DEST/dist" --only-binary=:all: "$PYBIND11"
pip_download "$DEST/dist" --only-binary=:all: "$WHEEL"
pip_download "$DEST/dist" --only-binary=:all: "$MSSSIM"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
  --target "$TMP/build_tools" "$DEST"/dist/pybind11-*.whl "$DEST"/dist/wheel-*.whl
PYTHONPATH="$TMP/build_tools${PYTHONPATH:+:$PYTHONPATH}" \
  pip_download "$DEST/dist" --no-binary=:all: --no-build-isolation "$COMPRESSAI"

if [ -f "$KODIM01" ]; then
  cp "$KODIM01" "$DEST/kodim01.png"
else
  echo "note: $KODIM01 not found; bench_official.py will time a synthetic image" >&2
fi

echo "official commit $FULL"
(cd "$DEST" && find . -type f ! -name '*.pyc' | sort | xargs ls -l | awk '{print $5, $9}')
du -sh "$DEST"
