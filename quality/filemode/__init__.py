"""File mode: JSONL (or .jsonl.gz) files in, envelopes and a summary out (``sieve curate``, ``sieve score``).

``loop`` runs the pipeline over the files and writes the outputs; ``summary`` is what
``summary.json`` says; ``files`` names the outputs, reads .gz, counts lines and checks
paths before any work.
"""

from quality.filemode.files import (OUTPUT_FILES, PathProblem, check_inputs, check_writable_dir, count_records,
                                    open_binary, prepare_out_dir, prepare_out_file)
from quality.filemode.loop import Sink, annotate, batched, curate, decide_records, read_records
from quality.filemode.summary import UNPARSED, Summary, distribution

__all__ = ["OUTPUT_FILES", "PathProblem", "Sink", "Summary", "UNPARSED", "annotate", "batched", "check_inputs",
           "check_writable_dir", "count_records", "curate", "decide_records", "distribution", "open_binary",
           "prepare_out_dir", "prepare_out_file", "read_records"]
