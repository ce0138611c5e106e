"""``streamml bench``: the end-to-end and SQL benchmarks, side by side with their references.

Each scenario runs its workers as separate processes against the same input topic and must produce a complete
output (every input Id exactly once, read ``read_committed``) or is reported FAILED.
"""

from streamml.bench.results import ScenarioResult, Summary, Target
from streamml.bench.suite import Section, SuiteOptions, SuiteReport, run_suite, sections

__all__ = ["ScenarioResult", "Section", "SuiteOptions", "SuiteReport", "Summary", "Target", "run_suite", "sections"]
