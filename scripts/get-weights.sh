#!/usr/bin/env bash
# Downloads the official Kosmos-G release files and Stable Diffusion 1.5 (diffusers layout) and
# converts them into one kosmosg-gst model file with tools/kosmosg-convert.
#
#   scripts/get-weights.sh [--dest DIR] [-o FILE] [--dtype fp16|fp32] [--sd15-repo OWNER/NAME]
#                          [--sd15-variant fp16|fp32] [--dry-run] [--no-download] [--no-convert]
#                          [-- EXTRA CONVERTER ARGS]
#
# Files already present are not downloaded again (interrupted downloads resume); files with a
# known SHA-256 are verified. Nothing but the downloads needs the network. See docs/weights-format.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

# Kosmos-G README (xichenpan/Kosmos-G, microsoft/unilm kosmos-g/): public read-only SAS link, valid to 2050
KG_BLOB="https://conversationhub.blob.core.windows.net/beit-share-public/kosmosg"
KG_SAS="sv=2023-01-03&st=2024-04-10T13%3A11%3A44Z&se=2050-04-11T13%3A11%3A00Z&sr=c&sp=r&sig=4cXJIjVRZHIBWqHjPgDn%2F01oczpDWXipmPCUk3Z8vbQ%3D"
# tokenizer files of the last commit that had kosmos-g/ in microsoft/unilm (later commits deleted it)
KG_DATA="https://raw.githubusercontent.com/microsoft/unilm/cb4748212b6f20f3463ec79add05a44833247979/kosmos-g/data"
SPM_SHA256=3a60b4d1d1d8f70c8b2569c94540d4d9b7c694fd32e7a428ad0dcffaafaa3beb
DICT_SHA256=ae535d7235a8386bf0a3c3c344123d4903d32bd93edc1a7a493abb9296ac35b3

dest=kosmosg-weights
output=""
dtype=fp16
sd15_repo=stable-diffusion-v1-5/stable-diffusion-v1-5
sd15_variant=fp16
dry_run=0
download=1
convert=1
extra=()

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "get-weights: $*" >&2
    exit 1
}

bad_usage() {
    echo "get-weights: $*" >&2
    echo "try: $0 --help" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --dest) [ $# -ge 2 ] || bad_usage "--dest needs a folder"; dest=$2; shift 2 ;;
    -o | --output) [ $# -ge 2 ] || bad_usage "$1 needs a file name"; output=$2; shift 2 ;;
    --dtype)
        [ $# -ge 2 ] || bad_usage "--dtype needs fp16 or fp32"
        case "$2" in fp16 | fp32) dtype=$2 ;; *) bad_usage "--dtype must be fp16 or fp32, not '$2'" ;; esac
        shift 2 ;;
    --sd15-repo)
        [ $# -ge 2 ] || bad_usage "--sd15-repo needs OWNER/NAME"
        [[ "$2" =~ ^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$ ]] || bad_usage "--sd15-repo must look like OWNER/NAME, not '$2'"
        sd15_repo=$2; shift 2 ;;
    --sd15-variant)
        [ $# -ge 2 ] || bad_usage "--sd15-variant needs fp16 or fp32"
        case "$2" in fp16 | fp32) sd15_variant=$2 ;; *) bad_usage "--sd15-variant must be fp16 or fp32, not '$2'" ;; esac
        shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --no-download) download=0; shift ;;
    --no-convert) convert=0; shift ;;
    --) shift; extra=("$@"); break ;;
    *) bad_usage "unknown argument '$1'" ;;
    esac
done
[ -n "$output" ] || output="$dest/kosmosg-$dtype.safetensors"

sd15="$dest/sd15"
suffix=""
[ "$sd15_variant" = fp16 ] && suffix=".fp16"
hf="https://huggingface.co/$sd15_repo/resolve/main"

# local path | URL | SHA-256 (empty: not published, checked structurally by the converter)
files=(
    "$dest/checkpoint_final.pt|$KG_BLOB/checkpoint_final.pt?$KG_SAS|"
    "$dest/sentencepiece.bpe.model|$KG_DATA/sentencepiece.bpe.model|$SPM_SHA256"
    "$dest/dict.txt|$KG_DATA/dict.txt|$DICT_SHA256"
    "$sd15/unet/config.json|$hf/unet/config.json|"
    "$sd15/unet/diffusion_pytorch_model$suffix.safetensors|$hf/unet/diffusion_pytorch_model$suffix.safetensors|"
    "$sd15/vae/config.json|$hf/vae/config.json|"
    "$sd15/vae/diffusion_pytorch_model$suffix.safetensors|$hf/vae/diffusion_pytorch_model$suffix.safetensors|"
    "$sd15/scheduler/scheduler_config.json|$hf/scheduler/scheduler_config.json|"
)

verify() { # path sha256 -> 0 ok / 1 mismatch
    local got
    [ -n "$2" ] || return 0
    got=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$got" != "$2" ]; then
        echo "get-weights: $1: SHA-256 $got, expected $2" >&2
        return 1
    fi
}

fetch() { # url path
    local part="$2.part"
    mkdir -p "$(dirname "$2")"
    if command -v curl >/dev/null; then
        curl -L --fail --retry 3 --continue-at - -o "$part" "$1" || return 1
    elif command -v wget >/dev/null; then
        wget -c -O "$part" "$1" || return 1
    else
        die "neither curl nor wget is installed"
    fi
    mv "$part" "$2"
}

if [ "$download" = 1 ] && [ "$dry_run" = 0 ]; then
    mkdir -p "$dest"
    avail=$(df -Pk "$dest" | awk 'NR == 2 { print int($4 / 1048576) }')
    if [ "${avail:-0}" -lt 25 ]; then
        echo "get-weights: warning: only ${avail} GiB free in $dest; about 25 GiB are needed" >&2
    fi
fi

missing=0
for entry in "${files[@]}"; do
    IFS='|' read -r path url sha <<<"$entry"
    if [ -f "$path" ]; then
        verify "$path" "$sha" || die "$path is corrupt; delete it and run again"
        echo "have     $path${sha:+ (SHA-256 verified)}"
        continue
    fi
    if [ "$download" = 0 ]; then
        echo "missing  $path" >&2
        missing=1
        continue
    fi
    if [ "$dry_run" = 1 ]; then
        echo "download $url"
        echo "      -> $path"
        continue
    fi
    echo "download $path"
    fetch "$url" "$path" || die "download failed: ${url%%\?*} (run again to resume)"
    verify "$path" "$sha" || { rm -f "$path"; die "$path: download corrupt, removed"; }
done
[ "$missing" = 0 ] || die "files are missing and --no-download was given"

[ "$convert" = 1 ] || exit 0

python=${PYTHON:-}
if [ -z "$python" ]; then
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import numpy' 2>/dev/null; then
            python=$p
            break
        fi
    done
fi
cmd=("${python:-python3}" "$root/tools/kosmosg-convert" --checkpoint "$dest/checkpoint_final.pt"
     --sd15 "$sd15" --spm "$dest/sentencepiece.bpe.model" --dict "$dest/dict.txt"
     --dtype "$dtype" -o "$output" ${extra[@]+"${extra[@]}"})
if [ "$dry_run" = 1 ]; then
    echo "convert  ${cmd[*]}"
    exit 0
fi
[ -n "$python" ] || die "no python3 with numpy found (Debian: apt install python3-numpy), or set PYTHON"
echo "convert  ${cmd[*]}"
"${cmd[@]}"
