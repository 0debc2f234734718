"""Types of native/iso8583.pyx (ISO 8583 codec, dialects as TOML data).

Message, the errors and the dialect tables are defined in native/iso8583_message.pyx,
native/iso8583_errors.pyx and native/iso8583_dialect.pyx, and imported from here.
"""

import os
from typing import Any, Mapping, Union

from native.iso8583_dialect import DIALECTS_DIR as DIALECTS_DIR
from native.iso8583_dialect import DialectSpec
from native.iso8583_dialect import available_dialects as available_dialects
from native.iso8583_errors import DecodeError as DecodeError
from native.iso8583_errors import EncodeError as EncodeError
from native.iso8583_message import Message as Message
from native.iso8583_message import Value as Value

# {"mti": "0200", 2: "4111...", 52: b"..."}; also "t" for the MTI and digit-string keys ("2").
MessageMapping = Mapping[Union[int, str], Any]

class Dialect(DialectSpec):
    def decode(self, data: bytes | bytearray | memoryview) -> Message: ...
    def salvage(self, data: bytes | bytearray | memoryview) -> Message: ...
    def encode(self, msg: Message | MessageMapping) -> bytes: ...
    def new(self, mti: str, fields: Mapping[int, Value] | None = None) -> Message: ...

def dialect(name_or_path: str | os.PathLike[str]) -> Dialect: ...
def parse_tlv48(value: str) -> dict[str, str]: ...
def build_tlv48(mapping: Mapping[str, str]) -> str: ...
