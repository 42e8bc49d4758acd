"""A failed export is one line that names the cause and the model code it arose in; the exporter's
own output (the traced graph, thousands of lines for an R-CNN) is kept for --debug (issue 15, item 3)."""

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
    assert f"GuardOnDataDependentSymNode at test_export_errors.py:{line} (forward)" in message
    assert "Could not guard on data-dependent expression" in message and "never zero" in message
    assert "\n" not in message and len(message) < 900
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing flooded the console
    assert "def forward" in failure.value.log and "aten.batch_norm" in failure.value.log  # kept for --debug
