"""switch.keyed_hash: HMAC-SHA256 from precomputed pads equals RFC 4231 and the stdlib."""
import hashlib
import hmac
import os

import pytest

from switch.keyed_hash import HmacSha256, keyed

# RFC 4231 section 4: test cases 1, 2 and 6 (a key longer than the block size).
RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]


@pytest.mark.parametrize("key,msg,expected", RFC4231)
def test_rfc4231_vectors(key, msg, expected):
    assert HmacSha256(key).hexdigest(msg) == expected
    assert HmacSha256(key).digest(msg).hex() == expected


@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64, 65, 200])
def test_equals_the_standard_library(key_len):
    key = os.urandom(key_len)
    h = keyed(key)
    for msg in (b"", b"x", os.urandom(1000)):
        assert h.hexdigest(msg) == hmac.new(key, msg, hashlib.sha256).hexdigest()
    # Reusing the precomputed pads leaves them untouched.
    assert h.hexdigest(b"abc") == h.hexdigest(b"abc")


def test_repr_shows_no_key():
    assert "Jefe" not in repr(HmacSha256(b"Jefe"))


@pytest.mark.parametrize("digits", [2, 32, 64])
def test_the_first_digits_are_the_full_digests_first(digits):
    key, msg = os.urandom(32), os.urandom(120)
    assert keyed(key).hexdigest(msg, digits) == hmac.new(key, msg, hashlib.sha256).hexdigest()[:digits]


@pytest.mark.parametrize("digits", [0, 1, 33, 66, -2])
def test_digits_out_of_range_or_odd_are_refused(digits):
    with pytest.raises(ValueError, match="even number from 2 to 64"):
        HmacSha256(b"k").hexdigest(b"m", digits)


def test_only_bytes_are_hashed_and_the_key_is_never_pickled():
    import pickle

    h = HmacSha256(b"Jefe")
    for wrong in ("text", None, bytearray(b"x")):
        with pytest.raises(TypeError):
            h.hexdigest(wrong)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(h)
