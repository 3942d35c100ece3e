"""Cells a spreadsheet would run as formulas, made inert in every CSV the product writes.

Excel, LibreOffice and Google Sheets treat a cell whose first character is ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return as a formula (OWASP, "CSV Injection"; ASVS 1.2.10 adds NUL). A claim id,
a reason or a rejected row's raw text comes from whoever sent the file, so such a cell gets a
leading single quote, which spreadsheets read as "this is text" and do not display. A cell with a line break
anywhere is quoted, a bare carriage return too (Python's csv module quotes only the characters of its
line terminator, so a lone CR would start a new row in a spreadsheet). A cell that is a
real number (``-12.5``, ``+3``, ``-1e5``) is left as it is: it cannot call anything, and a number
must stay a number. The web page's download applies the same rule in JavaScript
(``local/web/index.html``, ``csvCell``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any, Final, TextIO

# The ASCII triggers, their full-width forms (some spreadsheets fold them to ASCII), line breaks, NUL.
FORMULA_TRIGGERS: Final = frozenset("=+-@\t\r\n\0\uff1d\uff0b\uff0d\uff20")
_NUMBER: Final = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def is_plain_number(text: str) -> bool:
    """A decimal number as a spreadsheet reads one: digits, an optional sign, point and exponent."""
    return _NUMBER.fullmatch(text) is not None


def inert_cell(value: Any) -> Any:
    """``value`` unchanged unless it is text a spreadsheet would evaluate; then with a leading quote."""
    if not isinstance(value, str) or not value or value[0] not in FORMULA_TRIGGERS:
        return value
    if is_plain_number(value):
        return value
    return "'" + value


def inert_row(values: Iterable[Any]) -> list[Any]:
    return [inert_cell(v) for v in values]


class InertCsvWriter:
    """A CSV writer whose rows end in ``\n``, with every cell made inert and every cell holding a
    CR or LF quoted."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._row = io.StringIO()
        # With CRLF as the terminator the csv module quotes a cell holding either character.
        self._writer = csv.writer(self._row, lineterminator="\r\n")

    def writerow(self, cells: Iterable[Any]) -> None:
        self._row.seek(0)
        self._row.truncate()
        self._writer.writerow(inert_row(cells))
        self._out.write(self._row.getvalue()[:-2] + "\n")

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)
