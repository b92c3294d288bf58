"""Identifiers: unique within a process and across forked workers, in one fixed shape."""

from __future__ import annotations

import os
import re
import warnings

from proxy.ids import new_id


def test_ids_have_the_kind_and_24_hex_digits_and_do_not_repeat() -> None:
    ids = [new_id("req_") for _ in range(20000)]
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert new_id("chatcmpl-").startswith("chatcmpl-")


def test_a_forked_worker_draws_its_own_prefix() -> None:
    read, write = os.pipe()
    with warnings.catch_warnings():  # "multi-threaded process": the child only writes to a pipe
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report one id and leave without running pytest's exit handlers
        os.write(write, new_id("req_").encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = new_id("req_")
    assert re.fullmatch(r"req_[0-9a-f]{24}", child)
    assert child[4:16] != parent[4:16]
