#!/usr/bin/env python3
"""check-gst-docs.py - every property and signal of the kosmosg elements and of the filter's
pad class has a gtk-doc block, and docs/elements.md names it.

usage: check-gst-docs.py SRCDIR

Properties are read from the sources: each g_param_spec_*("name", ...) in a class_init names its
type by the GstKosmosG* type whose class_init it is in; the shared ones (gstkosmosgcommon.c's
gst_kosmosg_install_properties) belong to both elements. A block is `/** Type:name:` with at least
one line of text; signals (g_signal_new) need `/** Type::name:`. Prints the count checked."""
import re
import sys
from pathlib import Path

src = Path(sys.argv[1])
gst = src / 'gst'
elements_md = (src / 'docs' / 'elements.md').read_text()
blocks = {}
for f in sorted(gst.glob('*.c')):
    for m in re.finditer(r'/\*\*\s*\n\s*\* (GstKosmosG\w+:{1,2}[a-z0-9-]+):\s*\n((?:\s*\*.*\n)*?)\s*\*/',
                         f.read_text()):
        text = ' '.join(l.strip().lstrip('*').strip() for l in m.group(2).splitlines()).strip()
        blocks[m.group(1)] = text

# which type's class_init each spec is in
TYPES = {'gst_kosmosg_filter_pad_class_init': ['GstKosmosGFilterPad'],
         'gst_kosmosg_filter_class_init': ['GstKosmosGFilter'],
         'gst_kosmosg_src_class_init': ['GstKosmosGSrc'],
         'gst_kosmosg_install_properties': ['GstKosmosGFilter', 'GstKosmosGSrc']}
wanted = []
for f in sorted(gst.glob('*.c')):
    text = f.read_text()
    for m in re.finditer(r'^(\w+) \([^)]*\)\n\{\n(.*?)^\}', text, re.S | re.M):
        types = TYPES.get(m.group(1))
        body = m.group(2)
        specs = re.findall(r'g_param_spec_\w+ \("([a-z0-9-]+)"', body)
        sigs = re.findall(r'g_signal_new \("([a-z0-9-]+)"', body)
        if (specs or sigs) and not types:
            sys.exit(f'FAIL: {f.name}: {m.group(1)} installs properties/signals of an unknown type')
        for t in types or []:
            wanted += [(f'{t}:{n}', n) for n in specs] + [(f'{t}::{n}', n) for n in sigs]

missing = [k for k, _ in wanted if not blocks.get(k)]
undocumented = sorted({n for _, n in wanted if f'`{n}`' not in elements_md})
for k in missing:
    print(f'no gtk-doc block: {k}')
for n in undocumented:
    print(f'docs/elements.md does not name `{n}`')
if not wanted:
    sys.exit('FAIL: no property found (the parser is broken)')
if missing or undocumented:
    sys.exit(f'FAIL: {len(missing)} blocks missing, {len(undocumented)} names missing in docs/elements.md')
print(f'ok: {len(wanted)} properties/signals of the kosmosg elements and pads, each with a gtk-doc '
      f'block and named in docs/elements.md')
