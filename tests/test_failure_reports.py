"""Failures that say what happened (issue 15): a failed export is one line naming the cause and the
model code it arose in, the exporter's own output (the traced graph, thousands of lines for an
R-CNN) kept for --debug (item 3); a parity check with nothing in it is not a pass (item 2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgevision.errors import ExportError
from edgevision.export.onnx_export import _run_exporter


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))  # BatchNorm checks for an empty batch: a guard on the kept count


class KeepsSome(nn.Module):
    """A second stage on a data-dependent number of rows, as an R-CNN's mask head on kept detections."""

    input_names = ["images"]

    def __init__(self) -> None:
        super().__init__()
        self.head = Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = torch.nonzero(x[:, 0, 0, 0] > 0).squeeze(1)
        return self.head(x[kept])


def test_failed_export_names_the_cause_and_the_line(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ExportError) as failure:
        _run_exporter(KeepsSome().eval(), (torch.rand(2, 3, 8, 8),), ["out"], "dynamo", 18, False)
    message = str(failure.value)
    line = Head.forward.__code__.co_firstlineno + 1
    assert f"GuardOnDataDependentSymNode at test_failure_reports.py:{line} (forward)" in message
    assert "Could not guard on data-dependent expression" in message and "never zero" in message
    assert "\n" not in message and len(message) < 900
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing flooded the console
    assert "def forward" in failure.value.log and "aten.batch_norm" in failure.value.log  # kept for --debug


def test_parity_on_constant_logits_compares_nothing() -> None:
    """Issue 15, item 2 for classifiers and segmenters: equal logits everywhere agree trivially."""
    import numpy as np

    from edgevision.recipe_sections import Tolerance
    from edgevision.verify.parity import compare, judge

    tol = Tolerance(min_cosine=0.999, min_agreement=0.99)
    flat = [{"logits": np.full((2, 5), 0.3, np.float32)}]
    assert judge(compare("classification", flat, flat, tol), tol)[0].startswith("compared nothing")
    varied = [{"logits": np.arange(10, dtype=np.float32).reshape(2, 5)}]
    assert judge(compare("classification", varied, varied, tol), tol) == []
