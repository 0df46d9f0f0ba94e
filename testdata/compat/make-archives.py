#!/usr/bin/env python3
"""Archives for the ADD cases of the differential suite, written into ./context: plain.tar,
zipped.tar.gz and links.tar (hard and symbolic links), with owners 42:43 and fixed times."""
import io, tarfile, gzip
def build(path, gz=False, links=False):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode='w') as t:
        for name, data, mode in [('top/a.txt', b'a\n', 0o644), ('top/run.sh', b'#!/bin/sh\n', 0o755)]:
            i = tarfile.TarInfo(name); i.size = len(data); i.mode = mode; i.uid = 42; i.gid = 43; i.mtime = 1600000000
            t.addfile(i, io.BytesIO(data))
        d = tarfile.TarInfo('top/dir'); d.type = tarfile.DIRTYPE; d.mode = 0o750; d.mtime = 1600000000
        t.addfile(d)
        if links:
            l = tarfile.TarInfo('top/hard'); l.type = tarfile.LNKTYPE; l.linkname = 'top/a.txt'; l.mtime = 1600000000
            t.addfile(l)
            s = tarfile.TarInfo('top/soft'); s.type = tarfile.SYMTYPE; s.linkname = 'a.txt'; s.mtime = 1600000000
            t.addfile(s)
    data = b.getvalue()
    open(path, 'wb').write(gzip.compress(data, mtime=0) if gz else data)
build('context/plain.tar')
build('context/zipped.tar.gz', gz=True)
build('context/links.tar', links=True)
