"""Record normalization: one adapter module per provider shape, `detect` picks one."""

from exporter.records.detect import FORMATS, normalize
from exporter.records.errors import RejectedRecord
from exporter.records.record import FINISH_REASONS, Record, ToolCall

__all__ = ["FINISH_REASONS", "FORMATS", "Record", "RejectedRecord", "ToolCall", "normalize"]
