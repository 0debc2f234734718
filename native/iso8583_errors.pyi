"""Types of native/iso8583_errors.pyx (the ISO 8583 codec's errors, imported from native.iso8583)."""

class DecodeError(ValueError):
    field: int | None
    offset: int | None
    def __init__(self, message: str, field: int | None = None, offset: int | None = None) -> None: ...

class EncodeError(ValueError):
    field: int | None
    offset: None
    def __init__(self, message: str, field: int | None = None) -> None: ...
