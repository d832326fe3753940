#!/usr/bin/env python3
"""mutate-model.py - writes a damaged copy of a model file for the CLI robustness tests.

usage: mutate-model.py IN OUT [--fill TENSOR VALUE]... [--config KEY FIELD JSON]...
  --fill TENSOR VALUE   every element of an F32 tensor set to VALUE (nan, inf, 1e30 ...)
  --config KEY FIELD J  kg.config.KEY's FIELD set to the JSON value J (in the header text)
Only the standard library: the header is rewritten, the data region copied byte for byte."""
import json
import struct
import sys


def main(argv):
    src, dst = argv[1], argv[2]
    data = open(src, 'rb').read()
    n = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = bytearray(data[8 + n:])
    i = 3
    while i < len(argv):
        if argv[i] == '--fill':
            name, value = argv[i + 1], float(argv[i + 2])
            t = header[name]
            assert t['dtype'] == 'F32', t
            b, e = t['data_offsets']
            body[b:e] = struct.pack('<f', value) * ((e - b) // 4)
            i += 3
        elif argv[i] == '--config':
            key, field, text = 'kg.config.' + argv[i + 1], argv[i + 2], argv[i + 3]
            cfg = json.loads(header['__metadata__'][key])
            cfg[field] = '@@VALUE@@'
            # the raw JSON text, so values Python would not write (1e999) reach the reader
            header['__metadata__'][key] = json.dumps(cfg).replace('"@@VALUE@@"', text)
            i += 4
        else:
            sys.exit('mutate-model.py: unknown argument ' + argv[i])
    head = json.dumps(header).encode()
    head += b' ' * (-len(head) % 8)
    open(dst, 'wb').write(struct.pack('<Q', len(head)) + head + bytes(body))


if __name__ == '__main__':
    main(sys.argv)
