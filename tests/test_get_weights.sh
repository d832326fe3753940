#!/usr/bin/env bash
# scripts/get-weights.sh without the network: argument handling, the dry-run plan, hash checks of
# files already present, and an offline run (--no-download) that converts the tiny checkpoint laid
# out like a real download. Needs KG_GOLDEN; PYTHON (a python3 with numpy) for the conversion.
set -u
here=$(cd "$(dirname "$0")" && pwd)
script="$here/../scripts/get-weights.sh"
kg="${KG_GOLDEN:?KG_GOLDEN not set}/kosmosg"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

check() { # name expected-status command...
    local name=$1 want=$2
    shift 2
    "$@" >"$tmp/out" 2>&1
    local got=$?
    if [ "$got" = "$want" ]; then
        pass=$((pass + 1))
        echo "ok   $name (exit $got)"
    else
        fail=$((fail + 1))
        echo "FAIL $name: exit $got, expected $want"
        sed 's/^/     /' "$tmp/out"
    fi
}

expect_out() { # name text: the last command's output contains text
    if grep -qF -- "$2" "$tmp/out"; then
        pass=$((pass + 1))
        echo "ok   $1"
    else
        fail=$((fail + 1))
        echo "FAIL $1: output lacks '$2'"
        sed 's/^/     /' "$tmp/out"
    fi
}

check help 0 bash "$script" --help
expect_out "help lists --dry-run" "--dry-run"
check unknown-arg 2 bash "$script" --bogus
expect_out "unknown argument named" "unknown argument '--bogus'"
check bad-dtype 2 bash "$script" --dtype fp8
expect_out "bad dtype named" "--dtype must be fp16 or fp32, not 'fp8'"
check bad-repo 2 bash "$script" --sd15-repo "not a repo"
check dest-without-value 2 bash "$script" --dest

check dry-run 0 bash "$script" --dry-run --dest "$tmp/w"
expect_out "checkpoint URL" "https://conversationhub.blob.core.windows.net/beit-share-public/kosmosg/checkpoint_final.pt?sv=2023-01-03&"
expect_out "tokenizer URL" "https://raw.githubusercontent.com/microsoft/unilm/cb4748212b6f20f3463ec79add05a44833247979/kosmos-g/data/dict.txt"
expect_out "fp16 U-Net URL" "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/unet/diffusion_pytorch_model.fp16.safetensors"
expect_out "scheduler URL" "/resolve/main/scheduler/scheduler_config.json"
expect_out "convert command" "--sd15 $tmp/w/sd15 --spm $tmp/w/sentencepiece.bpe.model --dict $tmp/w/dict.txt --dtype fp16 -o $tmp/w/kosmosg-fp16.safetensors"
n=$(grep -c '^download ' "$tmp/out")
if [ "$n" = 8 ] && [ ! -e "$tmp/w" ]; then
    pass=$((pass + 1)); echo "ok   dry run plans 8 downloads and touches nothing"
else
    fail=$((fail + 1)); echo "FAIL dry run: $n downloads planned, dest exists: $([ -e "$tmp/w" ] && echo yes || echo no)"
fi

check dry-run-fp32 0 bash "$script" --dry-run --dest "$tmp/w" --sd15-variant fp32 --sd15-repo a/b --dtype fp32 -o "$tmp/m.safetensors"
expect_out "fp32 variant URL" "https://huggingface.co/a/b/resolve/main/vae/diffusion_pytorch_model.safetensors"
expect_out "output name" "--dtype fp32 -o $tmp/m.safetensors"

# files already there are verified where the hash is known
mkdir -p "$tmp/h"
cp "$kg/sentencepiece.bpe.model" "$kg/dict.txt" "$tmp/h/"
check verified 0 bash "$script" --dry-run --dest "$tmp/h"
expect_out "hash verified" "have     $tmp/h/dict.txt (SHA-256 verified)"
echo "x" >>"$tmp/h/dict.txt"
check corrupt 1 bash "$script" --dry-run --dest "$tmp/h"
expect_out "corrupt file named" "$tmp/h/dict.txt: SHA-256"

check no-download-missing 1 bash "$script" --no-download --dest "$tmp/h2"
expect_out "missing file named" "missing  $tmp/h2/checkpoint_final.pt"

# offline: the tiny checkpoint laid out like a real download (fp16 SD1.5 variant file names)
d="$tmp/offline"
mkdir -p "$d/sd15/unet" "$d/sd15/vae" "$d/sd15/scheduler"
ln -s "$kg/kosmosg_tiny/checkpoint_final.pt" "$d/checkpoint_final.pt"
cp "$kg/sentencepiece.bpe.model" "$kg/dict.txt" "$d/"
for sub in unet vae; do
    ln -s "$kg/kosmosg_tiny/sd15/$sub/config.json" "$d/sd15/$sub/config.json"
    ln -s "$kg/kosmosg_tiny/sd15/$sub/diffusion_pytorch_model.safetensors" "$d/sd15/$sub/diffusion_pytorch_model.fp16.safetensors"
done
ln -s "$kg/kosmosg_tiny/sd15/scheduler/scheduler_config.json" "$d/sd15/scheduler/scheduler_config.json"
check offline-convert 0 bash "$script" --no-download --dest "$d" --dtype fp32 -- --clip-head-width 16 --aligner-heads 4
expect_out "converter ran" "wrote $d/kosmosg-fp32.safetensors"
if [ -n "${KG_TINY_MODEL:-}" ] && [ -n "${PYTHON:-}" ]; then
    check offline-equals-build-model 0 "$PYTHON" - "$d/kosmosg-fp32.safetensors" "$KG_TINY_MODEL" <<'EOF'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    m = h.pop("__metadata__")
    return m, {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
ma, a = load(sys.argv[1])
mb, b = load(sys.argv[2])
assert a == b, "tensors differ"
assert {k: v for k, v in ma.items() if k != "kg.sources"} == {k: v for k, v in mb.items() if k != "kg.sources"}
print("%d tensors identical" % len(a))
EOF
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
