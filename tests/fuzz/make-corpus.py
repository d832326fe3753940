#!/usr/bin/env python3
"""make-corpus.py - writes the seed corpora of the fuzz targets (except safetensors').

usage: tests/fuzz/make-corpus.py GOLDEN_DIR TINY_MODEL

GOLDEN_DIR holds kosmosg/sentencepiece.bpe.model; TINY_MODEL is the converted tiny
model (build/tests/kosmosg_tiny.safetensors). The seeds are committed; this script
documents how they were made and regenerates them."""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def out(corpus, name, data):
    d = os.path.join(HERE, 'corpus_' + corpus)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)


# ---- protobuf (wire format) ------------------------------------------------
def varint(v):
    b = bytearray()
    while True:
        c = v & 0x7f
        v >>= 7
        b.append(c | (0x80 if v else 0))
        if not v:
            return bytes(b)


def read_varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7f) << s
        s += 7
        if not c & 0x80:
            return v, i


def fields(b):
    i, res = 0, []
    while i < len(b):
        k, i = read_varint(b, i)
        n, w = k >> 3, k & 7
        if w == 0:
            v, i = read_varint(b, i)
        elif w == 2:
            ln, i = read_varint(b, i)
            v = b[i:i + ln]
            i += ln
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        res.append((n, w, v))
    return res


def enc(fs):
    b = bytearray()
    for n, w, v in fs:
        b += varint(n << 3 | w)
        if w == 0:
            b += varint(v)
        elif w == 2:
            b += varint(len(v)) + v
        else:
            b += v
    return bytes(b)


def piece(s, score, typ=None):
    fs = [(1, 2, s.encode()), (2, 5, struct.pack('<f', score))]
    if typ is not None:
        fs.append((3, 0, typ))
    return (1, 2, enc(fs))


def spm_seeds(golden):
    real = open(os.path.join(golden, 'kosmosg', 'sentencepiece.bpe.model'), 'rb').read()
    fs = fields(real)
    pieces = [f for f in fs if f[0] == 1]
    trainer = [f for f in fs if f[0] == 2]
    normalizer = [f for f in fs if f[0] == 3][0]
    norm_fields = fields(normalizer[2])
    norm_nomap = (3, 2, enc([f for f in norm_fields if f[0] != 2]))
    # the first 400 real pieces, real specs, the real precompiled charsmap (nmt_nfkc)
    out('spm', 'real400_charsmap.model', enc(pieces[:400] + trainer + [normalizer]))
    out('spm', 'real400_nocharsmap.model', enc(pieces[:400] + trainer + [norm_nomap]))
    # hand-made minimal models
    mini = [piece('<unk>', 0, 2), piece('<s>', 0, 3), piece('</s>', 0, 3),
            piece('\u2581', -2), piece('a', -3), piece('\u2581a', -1.5), piece('b', -4),
            piece('ab', -2.5), piece('<i>', -8)]
    tr = (2, 2, enc([(3, 0, 1)]))
    nr = (3, 2, enc([(1, 2, b'identity'), (3, 0, 1), (4, 0, 1), (5, 0, 1)]))
    out('spm', 'mini.model', enc(mini + [tr, nr]))
    out('spm', 'mini_noprefix.model', enc(mini + [tr, (3, 2, enc([(3, 0, 0), (4, 0, 0)]))]))
    out('spm', 'mini_suffix.model', enc(mini + [(2, 2, enc([(3, 0, 1), (24, 0, 1)])), nr]))
    out('spm', 'bad_bpe.model', enc(mini + [(2, 2, enc([(3, 0, 2)])), nr]))
    out('spm', 'bad_user_defined.model', enc(mini + [piece('xyz', 0, 4), tr, nr]))
    out('spm', 'bad_byte.model', enc(mini + [piece('<0x41>', 0, 6), (2, 2, enc([(3, 0, 1), (35, 0, 1)])), nr]))
    out('spm', 'bad_truncated.model', enc(mini + [tr, nr])[:-3])
    out('spm', 'bad_no_normalizer.model', enc(mini + [tr]))
    # a small charsmap: the real one cut to its trie and a few strings is invalid, so
    # keep the real trie but a cut string blob as a "corrupted" seed
    cm = [f for f in norm_fields if f[0] == 2][0][2]
    trie_len = struct.unpack('<I', cm[:4])[0]
    cut = cm[:4 + trie_len + 64]
    out('spm', 'bad_charsmap_cut.model',
        enc(mini + [tr, (3, 2, enc([(2, 2, cut)] + [f for f in norm_fields if f[0] != 2]))]))


def text_seeds():
    texts = {
        'plain': 'a photo of a cat wearing a red hat',
        'spaces': '   many    spaces\tand\ttabs\n\nnewlines   ',
        'nfkc': '\uff26\uff55\uff4c\uff4c \ufb01 \u2460 \u3392 \u00bd \u1e9b\u0323 \ufdfa',
        'cjk': '\u3053\u3093\u306b\u3061\u306f \u4e16\u754c \uac00\ub098\ub2e4',
        'combining': 'e\u0301 a\u0308 \u304b\u3099 \u1100\u1161',
        'emoji': '\U0001f600 \U0001f469\u200d\U0001f4bb \u2764\ufe0f',
        'specials': '<s> </s> <pad> <unk> <image> </image> <mask> </doc> <i>',
        'long_word': 'supercalifragilisticexpialidocious' * 8,
        'digits': '1234567890 3.14159 1,000,000 $5 100%',
    }
    for k, v in texts.items():
        out('tokenizer', k + '.txt', v)
    out('tokenizer', 'invalid_utf8.bin', b'ok \xff\xfe \xc0\x80 \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82 end')
    out('tokenizer', 'del_only.bin', b'\x7f')  # a harness finding: DEL normalises away
    out('tokenizer', 'controls.bin', bytes(range(0, 32)) + b'\x7f text \x00 after nul')
    # prompt: [n_images][image tokens][prompt bytes]
    prompts = [
        (2, 63, 'a <i> wearing <i>'),
        (1, 3, '<i>'),
        (0, 7, 'a beautiful landscape, no images'),
        (3, 1, '<i><i><i>'),
        (2, 4, '<i> and <i> but not <i'),
        (1, 2, 'text before <i> text after with \u00e9 and \uff26'),
        (1, 5, '<<i>>'),
        (2, 2, '<i>\x00<i>'),
        (1, 255, 'image tokens 0 is refused <i>'),
        (-1, 4, 'negative count <i>'),
        (4, 8, '<i>x<i>y<i>z<i>'),
    ]
    for k, (n, l, p) in enumerate(prompts):
        out('prompt', 'p%02d.bin' % k, struct.pack('<bB', n, l) + p.encode())
    out('prompt', 'invalid_utf8.bin', struct.pack('<bB', 1, 9) + b'\xff<i>\xc3')


def image_seeds():
    # format, w, h, flags, stride pad, resize w-1, resize h-1, unused, pixels
    def img(fmt, w, h, flags=0, pad=0, rw=15, rh=15, pix=b''):
        return struct.pack('<BHHBBBBB', fmt, w, h, flags, pad, rw, rh, 0) + pix
    grad = bytes((i * 37) % 256 for i in range(997))
    seeds = {
        'rgb_224': img(0, 224, 224, pix=grad),
        'rgba_300x200': img(1, 300, 200, pad=12, pix=grad),
        'rgbx_1x1': img(2, 1, 1, pix=b'\x10\x20\x30\x40'),
        'bgr_tall_3x700': img(3, 3, 700, pad=1, rw=255, rh=0, pix=grad),
        'bgra_wide_900x2': img(4, 900, 2, pad=255, pix=grad),
        'bgrx_225': img(5, 225, 225, pix=grad),
        'gray_347x223': img(6, 347, 223, pad=3, rw=99, rh=200, pix=grad),
        'gray_upscale_5x7': img(6, 5, 7, rw=255, rh=255, pix=b'\x00\xff'),
        'bad_format': img(7, 10, 10),
        'bad_format_8': img(8, 10, 10),
        'bad_zero_width': img(0, 0, 10),
        'bad_too_wide': img(0, 2, 10, flags=1),
        'bad_stride': img(1, 20, 20, flags=4),
        'bad_null_data': img(0, 20, 20, flags=8),
        'max_side_65536x1': img(6, 65535, 1, flags=0, pix=grad),
    }
    for k, v in seeds.items():
        out('image', k + '.bin', v)


def model_seeds(tiny):
    b = open(tiny, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    meta = hdr['__metadata__']
    meta.pop('kg.sources', None)

    def dump(h):
        return json.dumps(h, separators=(',', ':'))
    out('model', 'tiny_header.json', dump(hdr))
    v = json.loads(dump(hdr))
    v['__metadata__']['kg.format_version'] = '2'
    out('model', 'bad_version.json', dump(v))
    v = json.loads(dump(hdr))
    s, d = v['tokenizer.sentencepiece'], v['tokenizer.dict']
    s['data_offsets'], d['data_offsets'] = [s['data_offsets'][0], s['data_offsets'][0] + d['shape'][0]], \
        [s['data_offsets'][0] + d['shape'][0], d['data_offsets'][1]]
    s['shape'], d['shape'] = d['shape'], s['shape']
    out('model', 'bad_tokenizer_swapped.json', dump(v))
    v = json.loads(dump(hdr))
    c = json.loads(v['__metadata__']['kg.config.mllm'])
    c['layers'] = c['layers'] + 1
    v['__metadata__']['kg.config.mllm'] = json.dumps(c)
    out('model', 'bad_mllm_layers.json', dump(v))
    v = json.loads(dump(hdr))
    c = json.loads(v['__metadata__']['kg.config.unet'])
    c['block_out_channels'] = c['block_out_channels'][:1]
    v['__metadata__']['kg.config.unet'] = json.dumps(c)
    out('model', 'bad_unet_blocks.json', dump(v))
    # raw files (not starting with '{')
    out('model', 'raw_empty_header.safetensors', struct.pack('<Q', 2) + b'{}')
    small = json.dumps({'__metadata__': {'kg.format_version': '1'},
                        'x': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4]}}).encode()
    out('model', 'raw_version_only.safetensors', struct.pack('<Q', len(small)) + small + b'\0\0\x80\x3f')


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    spm_seeds(sys.argv[1])
    text_seeds()
    image_seeds()
    model_seeds(sys.argv[2])
