"""Types of native/iso8583_dialect.pyx (ISO 8583 dialect files compiled into tables)."""

from typing import Any

DIALECTS_DIR: str

class DialectSpec:
    """Base of native.iso8583.Dialect: a dialect's tables, made only by native.iso8583.dialect()."""
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def defined_fields(self) -> tuple[int, ...]: ...
    def field_spec(self, n: int) -> dict[str, Any] | None: ...

def available_dialects() -> list[str]: ...
