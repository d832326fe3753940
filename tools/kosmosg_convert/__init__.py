"""kosmosg-convert: official Kosmos-G release files -> one self-contained .safetensors model file.

Only numpy is needed; PyTorch checkpoints are read by our own restricted unpickler
(ptload.py), so no foreign code runs and neither torch nor fairseq/omegaconf is imported."""

FORMAT_VERSION = "1"
