"""Types of native/emv.pyx (EMV BER-TLV of field 55)."""

from typing import Union

Buffer = Union[bytes, bytearray, memoryview]
# A primitive object's value is bytes, a template's a list of objects.
Item = tuple[int, Union[bytes, "list[Item]"]]

MAX_DEPTH: int

class BerError(ValueError):
    offset: int | None
    def __init__(self, message: str, offset: int | None = None) -> None: ...

def check(data: Buffer) -> None: ...
def decode(data: Buffer) -> list[Item]: ...
def objects(data: Buffer) -> list[tuple[int, bytes]]: ...
def encode(items: list[Item]) -> bytes: ...
