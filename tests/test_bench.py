"""The bench's judgement of a busy machine, fed synthetic CPU-time figures (no timing)."""

import io

from prosparse_cpu.bench import print_table
from prosparse_cpu.bench.harness import _add_ratios
from prosparse_cpu.bench.machine import BUSY_SHARE, CpuClock, busy_verdict, others_share


def test_others_share_from_two_clock_readings():
    a = CpuClock(wall=100.0, busy=5000.0, ours=10.0, n_cpu=2)
    # 2 s on 2 CPUs = 4 CPU-seconds; the machine was busy for 3.5 of them, 2.0 of those ours
    b = CpuClock(wall=102.0, busy=5003.5, ours=12.0, n_cpu=2)
    assert abs(others_share(a, b) - 0.375) < 1e-12
    assert others_share(a, CpuClock(102.0, 5002.0, 12.1, 2)) == 0.0  # tick rounding below our own time: none
    assert others_share(a, CpuClock(102.0, 5010.0, 12.0, 2)) == 1.0  # never above every CPU
    assert others_share(a, CpuClock(100.1, 5000.2, 10.0, 2)) is None  # too short for tick-counted figures
    assert others_share(None, b) is None and others_share(a, None) is None


def test_busy_verdict_from_others_share():
    # the figures of quiet runs and of runs beside one CPU hog on 2 cores
    quiet = busy_verdict(0.0, 0.021)
    assert not quiet["busy"] and quiet["busy_when"] == []
    assert quiet["others_cpu_share_during"] == 0.021 and quiet["busy_threshold_share"] == BUSY_SHARE
    hog = busy_verdict(0.50, 0.40)
    assert hog["busy"] and hog["busy_when"] == ["before", "during"]
    assert busy_verdict(0.0, 0.31)["busy_when"] == ["during"]  # a job that started after the check
    assert busy_verdict(0.57, None)["busy_when"] == ["before"]  # a run too short to measure
    assert not busy_verdict(None, None)["busy"]                # nothing measurable: no claim
    assert busy_verdict(0.05, 0.05, threshold=0.04)["busy"] and not busy_verdict(0.05, 0.05, threshold=0.06)["busy"]


def _result(busy: bool) -> dict:
    test = {"n": 3, "median": 100.0, "min": 90.0, "max": 110.0, "stdev": 10.0}
    machine = {"cpu": "test cpu", "cpu_count": 2, "loadavg_before": [0.1, 0, 0], "loadavg_after": [0.2, 0, 0]}
    machine |= busy_verdict(0.50 if busy else 0.0, 0.40 if busy else 0.02)
    return {"config": {"model": "/m.gguf", "threads": 2, "reps": 3}, "machine": machine,
            "engines": [{"name": "llama.cpp", "kind": "llama.cpp", "mode": "dense", "tests": {"tg8": dict(test)}},
                        {"name": "ours dense", "kind": "prosparse", "mode": "dense",
                         "tests": {"tg8": dict(test, median=250.0)}}]}


def test_busy_run_is_flagged_above_the_table_and_in_the_ratios():
    for busy in (False, True):
        r = _result(busy)
        _add_ratios(r)
        ours = r["engines"][1]["tests"]["tg8"]
        assert ours["ratio_vs_llama_cpp"] == 2.5 and ours["ratio_reliable"] is (not busy)
        out = io.StringIO()
        print_table(r, file=out)
        text = out.getvalue()
        lines = text.splitlines()
        title = next(i for i, line in enumerate(lines) if "m.gguf, 2 threads" in line)
        if busy:
            assert "busy" in " ".join(lines[:title]) and "50% just before the run, 40% during it" in text
            assert "unreliable" in " ".join(lines[:title]) and "2.50x?" in text
        else:
            assert "busy" not in text and "2.50x?" not in text and "2.50x" in text
        assert "other processes' share of the CPUs" in lines[-1]
