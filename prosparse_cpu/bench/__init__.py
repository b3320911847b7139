"""`prosparse bench`: our engine's modes next to llama.cpp, in llama-bench's convention.

- harness: the measuring loop (run_bench) and which modes a file runs;
- engines: llama.cpp and our engine behind one timing interface;
- traffic: weight bytes a decode step reads, for the bandwidth bound;
- machine: the machine's description, read bandwidth and their stability;
- report: the table, the JSON file, the plot.
"""

from .engines import LlamaCppEngine, OurEngine
from .harness import Series, default_modes, run_bench, time_pp, time_tg
from .machine import BW_SPREAD, bandwidth_unstable, machine_info, measure_read_bandwidth
from .report import bandwidth_note, print_table, write_json, write_plot
from .traffic import bytes_per_token, weight_bytes

__all__ = ["BW_SPREAD", "LlamaCppEngine", "OurEngine", "Series", "bandwidth_note", "bandwidth_unstable",
           "bytes_per_token", "default_modes", "machine_info", "measure_read_bandwidth", "print_table", "run_bench",
           "time_pp", "time_tg", "weight_bytes", "write_json", "write_plot"]
