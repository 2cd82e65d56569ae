"""The README's Kafka examples run as printed, against the real broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
SECTION = README.split("### wfe-kafka:", 1)[1].split("\n### ", 1)[0]


def test_the_python_example_prints_the_result(kafka_bootstrap: str, tmp_path: Path) -> None:
    code = re.search(r"<!-- readme-test: kafka -->\n```python\n(.*?)```", SECTION, re.S)
    assert code is not None
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=dict(os.environ, KAFKA_BROKERS=kafka_bootstrap),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "greeting-1 completed HI\n"


def test_the_sasl_example_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every setting it names reaches kafka-python (an unknown one would be refused)."""
    code = next(b for b in re.findall(r"```python\n(.*?)```", SECTION, re.S) if "SASL_SSL" in b)
    from wfe_kafka import KafkaMQInterface

    # The CA file it names must exist (a missing one is refused): one of ours instead.
    ca = tmp_path / "kafka-ca.pem"
    ca.write_text("not checked until a connection is made\n")
    assert "/etc/ssl/kafka-ca.pem" in code
    code = code.replace("/etc/ssl/kafka-ca.pem", str(ca))

    env = {"os": os, "KafkaMQInterface": KafkaMQInterface}
    monkeypatch.setenv("KAFKA_PASSWORD", "secret")
    kafka = eval(code, env)  # the block is one expression
    assert kafka.consumer_settings()["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kafka.producer_settings()["ssl_cafile"] == str(ca)
