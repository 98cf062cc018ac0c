"""Training and evaluation data: the record format (:mod:`.records`), and later its validator,
converters, the synthetic audio-visual world and omni-caption / instruction generation."""

from .records import BadRecord, MediaRef, Record, RecordError, parse_record, read_records, write_records

__all__ = ["BadRecord", "MediaRef", "Record", "RecordError", "parse_record", "read_records", "write_records"]
