"""Training and evaluation data.

- :mod:`.records`: the one record format (LLaVA or OpenAI turns, media list, caption pairs).
- :mod:`.validate`: check records files (format, placeholders, lengths, media) in parallel;
  :class:`RecordReader` skips and counts bad records for training, or stops (strict).
- :mod:`.convert`: public datasets' annotation files -> records.
- :mod:`.synth`: the synthetic audio-visual world (clips, stills, depth, captions, questions, judge).
- :mod:`.omni_caption`, :mod:`.pseudolabel`, :mod:`.instruct`: LLM data pipelines (VAST omni
  captions, Lialin et al. pseudo-labels, instruction generation), on :mod:`.llm` backends and the
  resumable runner in :mod:`.pipeline`; :mod:`.shards` and :mod:`.ray_runner` run them sharded over
  Ray Data actors (the optional ``scale`` extra).
"""

from .records import (
    BadRecord,
    MediaRef,
    Record,
    RecordError,
    parse_record,
    read_numbered_records,
    read_records,
    write_records,
)
from .validate import RecordLimits, RecordReader, ValidationReport, validate_records

__all__ = [
    "BadRecord",
    "MediaRef",
    "Record",
    "RecordError",
    "RecordLimits",
    "RecordReader",
    "ValidationReport",
    "parse_record",
    "read_numbered_records",
    "read_records",
    "validate_records",
    "write_records",
]
