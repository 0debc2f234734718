"""switch.entropy: random bytes from a block, never handed out twice, also across fork()."""
import os

from switch import entropy


def test_random_bytes_are_fresh_slices_of_the_requested_size():
    taken = [entropy.random_bytes(12) for _ in range(1000)]  # several blocks
    assert all(len(b) == 12 and type(b) is bytes for b in taken)
    assert len(set(taken)) == len(taken)
    assert len(entropy.random_bytes(2048)) == 2048  # larger than a slice: straight from the source


def test_a_forked_child_never_hands_out_what_its_parent_will():
    entropy.random_bytes(12)  # the parent now holds a block with bytes left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next bytes, to the parent
        try:
            os.write(write, entropy.random_bytes(12))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 12)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 12
    assert entropy.random_bytes(12) != child
