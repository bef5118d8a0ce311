"""Ordering names as JavaScript's ``String.prototype.localeCompare`` does in Kibana (Node's ICU, root collation),
for the lists Kibana sorts that way (the connector list, docs/KIBANA.md 3).

An approximation of the Unicode Collation Algorithm's three levels, enough for names: first the characters
without case or accents (spaces, then punctuation, symbols, digits, letters), then the accents, then the case
(lower case first). So ``apple`` < ``Banana`` < ``banana2`` < ``Éclair`` < ``zeta``, where code point order would put
every capital first.
"""

from __future__ import annotations

import unicodedata

_CLASS_OF_CATEGORY = {"Z": 0, "C": 0, "P": 1, "S": 2, "N": 3, "L": 4, "M": 5}


def locale_compare_key(text: str) -> tuple:
    primary, secondary, tertiary = [], [], []
    for char in text:
        decomposed = unicodedata.normalize("NFD", char)
        base = "".join(c for c in decomposed if not unicodedata.combining(c)) or decomposed
        folded = base.casefold()
        primary.append((_CLASS_OF_CATEGORY.get(unicodedata.category(base[0])[0], 5), folded))
        secondary.append("".join(c for c in decomposed if unicodedata.combining(c)))
        tertiary.append(0 if base == folded else 1)
    return tuple(primary), tuple(secondary), tuple(tertiary)
