from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from search_spaces import build_model, get_space, mobilenet_v2
from search_spaces.export import INPUT_NAME, export_onnx


@pytest.mark.parametrize("shortcut", ["bottleneck", "expansion"])
def test_onnx_runtime_output_equals_torch(tmp_path, rng, shortcut):
    spec = get_space("proxy-digits").sample(rng).replace(shortcut=shortcut, bottleneck_activation="relu6")
    model = build_model(spec).eval()
    path = export_onnx(model, tmp_path / "model.onnx", batch_size=2)
    onnx.checker.check_model(str(path))
    x = torch.randn(2, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (2, spec.num_classes)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert not model.training


def test_export_from_spec_and_training_mode_is_restored(tmp_path):
    spec = mobilenet_v2(0.35, 32, num_classes=10)
    path = export_onnx(spec, tmp_path / "sub" / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    # batch norm is folded into the convolutions
    assert "BatchNormalization" not in {n.op_type for n in graph.node}
    model = build_model(spec).train()
    export_onnx(model, tmp_path / "t.onnx")
    assert model.training


def test_export_needs_input_shape_for_a_plain_module(tmp_path):
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(torch.nn.Conv2d(3, 4, 1), tmp_path / "c.onnx")
    path = export_onnx(torch.nn.Conv2d(3, 4, 1), tmp_path / "c.onnx", input_shape=(1, 3, 5, 5))
    assert path.is_file()
    with pytest.raises(ValueError, match="batch_size"):
        export_onnx(mobilenet_v2(0.35, 32), tmp_path / "x.onnx", batch_size=0)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mnasnet_a1"])
def test_squeeze_excitation_and_hswish_networks_export_and_run_as_in_torch(tmp_path, name):
    from search_spaces import reference_arch

    spec = reference_arch(name, resolution=64, num_classes=10)
    model = build_model(spec).eval()
    path = export_onnx(model, tmp_path / "zoo.onnx")
    onnx.checker.check_model(str(path))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)
