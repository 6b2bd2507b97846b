"""Reading the hand-over files between steps (dataset manifest, train result, evaluation result)
into frozen records: a field missing or unknown fails loudly, naming the file.

Each file's record lives beside the code that owns its format: components/manifest.py
(manifest.json), components/results.py (train_result.json and result.json).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from components.errors import UserError


def from_fields(record_type, fields: dict[str, Any], path: str, fix: str):
    """A frozen record of `record_type` from a file's JSON object; a field missing or unknown is a
    one-line UserError naming the file (`path`) and the `fix`."""
    names = {field.name for field in dataclasses.fields(record_type)}
    required = {field.name for field in dataclasses.fields(record_type)
                if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING}
    missing, unknown = sorted(required - set(fields)), sorted(set(fields) - names)
    if missing or unknown:
        problems = ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has unknown {', '.join(unknown)}"]
                                                                            if unknown else [])
        raise UserError(f"{path} {' and '.join(problems)}; {fix}")
    return record_type(**fields)
