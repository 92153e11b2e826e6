"""Evaluation, as the field's frameworks split it: a benchmark says what data and how it is attacked
(benchmarks.py, benchmark_data.py, pair.py), a judge says how an answer is scored (judges/), and the report turns
judged records into metrics, tables and charts (report.py, study_report.py). The evaluate stage wires them."""
