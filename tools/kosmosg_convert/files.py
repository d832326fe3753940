"""Input and output paths checked before anything can block or half-write.

open() of a FIFO blocks until a writer comes; a directory or a device given as an input file
fails late or reads forever. Every input the converter opens goes through require_regular()
first (a non-blocking open, then fstat), and the output is checked before the conversion starts."""

import os
import stat

from .errors import ConvertError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode):
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a file"


def require_regular(path, what="input"):
    """ConvertError unless path is a readable regular file; never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ConvertError("%s %s: cannot open: %s" % (what, path, e.strerror or e))
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode):
        raise ConvertError("%s %s: not a regular file (%s)" % (what, path, _kind(mode)))


def check_output(path):
    """The output's directory must exist and be writable, and an existing output must be a regular
    file: found now, not after minutes of conversion."""
    d = os.path.dirname(path) or "."
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ConvertError("output %s: %s" % (path, e.strerror or e))
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ConvertError("output %s: exists and is not a regular file (%s)" % (path, _kind(st.st_mode)))
    if not os.path.isdir(d):
        raise ConvertError("output %s: directory %s does not exist" % (path, d))
    if not os.access(d, os.W_OK | os.X_OK):
        raise ConvertError("output %s: directory %s is not writable" % (path, d))
