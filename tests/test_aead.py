"""native.aead: AES-GCM with its key schedule kept, held to cryptography's AESGCM byte for byte."""
import os
import random

import pytest
from cryptography.exceptions import InvalidTag as ReferenceInvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from native.aead import AesGcm, InvalidTag, random_bytes
from switch.journal import reversal_card


@pytest.mark.parametrize("key_len", [16, 24, 32])
def test_encrypt_and_decrypt_agree_with_the_reference_both_ways(key_len):
    rnd = random.Random(key_len)
    key = rnd.randbytes(key_len)
    ours, ref = AesGcm(key), AESGCM(key)
    for size in (0, 1, 15, 16, 17, 19, 64, 1000):
        for aad_size in (0, 1, 40, 200):
            nonce, data, aad = rnd.randbytes(12), rnd.randbytes(size), rnd.randbytes(aad_size)
            sealed = ours.encrypt(nonce, data, aad)
            assert sealed == ref.encrypt(nonce, data, aad)
            assert ours.decrypt(nonce, sealed, aad) == data
            assert ref.decrypt(nonce, sealed, aad) == data


def test_seal_is_prefix_fresh_nonce_ciphertext_and_tag():
    key = os.urandom(32)
    ours, ref = AesGcm(key), AESGCM(key)
    seen = set()
    for _ in range(500):
        sealed = ours.seal(b"\x01", b"4111111111111111", b"aad")
        assert len(sealed) == 1 + 12 + 16 + 16 and sealed[0] == 1
        assert ref.decrypt(sealed[1:13], sealed[13:], b"aad") == b"4111111111111111"
        seen.add(sealed[1:13])
    assert len(seen) == 500  # a nonce is never used twice


def test_anything_changed_does_not_open_and_nothing_of_it_comes_back():
    key = os.urandom(32)
    ours = AesGcm(key)
    nonce, aad = os.urandom(12), b"payswitch in-flight card v1 T1|000001|1130081200|d"
    sealed = ours.encrypt(nonce, b"4111111111111111", aad)
    flipped = [bytes(sealed[:i]) + bytes([sealed[i] ^ 1]) + sealed[i + 1:] for i in range(len(sealed))]
    attempts = [(nonce, s, aad) for s in flipped] + [
        (nonce, sealed, aad + b"x"),
        (nonce, sealed, aad[:-1]),
        (bytes([nonce[0] ^ 1]) + nonce[1:], sealed, aad),
        (nonce, sealed[:-1], aad),
    ]
    for n, s, a in attempts:
        with pytest.raises(InvalidTag) as err:
            ours.decrypt(n, s, a)
        assert "4111" not in str(err.value)
    with pytest.raises(InvalidTag):
        AesGcm(os.urandom(32)).decrypt(nonce, sealed, aad)  # another key
    # The object is still sound after refusals.
    assert ours.decrypt(nonce, sealed, aad) == b"4111111111111111"
    # and the reference refuses what ours refuses
    with pytest.raises(ReferenceInvalidTag):
        AESGCM(key).decrypt(nonce, flipped[0], aad)


def test_bad_arguments_are_refused_with_their_size():
    with pytest.raises(ValueError, match="16, 24 or 32 bytes, got 31"):
        AesGcm(b"k" * 31)
    ours = AesGcm(b"k" * 32)
    with pytest.raises(ValueError, match="nonce is 12 bytes, got 11"):
        ours.encrypt(b"n" * 11, b"", b"")
    with pytest.raises(ValueError, match="16-byte tag"):
        ours.decrypt(b"n" * 12, b"t" * 15, b"")
    with pytest.raises(TypeError):
        ours.encrypt(b"n" * 12, "text", b"")
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(ours)
    assert "k" * 4 not in repr(ours)


def test_random_bytes_sizes_and_freshness():
    assert random_bytes(0) == b""
    assert len(random_bytes(4096)) == 4096  # larger than a slice: straight from the generator
    taken = [random_bytes(12) for _ in range(2000)]
    assert len(set(taken)) == len(taken)
    with pytest.raises(ValueError):
        random_bytes(-1)


def test_cards_sealed_before_the_native_cipher_still_open():
    """A journal written by a switch that sealed with cryptography's AESGCM opens after the upgrade."""
    secret = b"journal secret"
    nonce, pan, txn_id = os.urandom(12), "4761739001010010", 42
    aad = reversal_card._aad(txn_id, reversal_card.KEY_VERSION)
    old = bytes([reversal_card.KEY_VERSION]) + nonce + AESGCM(reversal_card.card_key(secret)).encrypt(
        nonce, pan.encode(), aad)
    assert reversal_card.open_sealed(secret, txn_id, old) == pan
    new = reversal_card.seal(secret, txn_id, pan)
    assert AESGCM(reversal_card.card_key(secret)).decrypt(new[1:13], new[13:], aad) == pan.encode()
