"""nas.device: device and precision resolution (the CUDA branches with a simulated GPU), autocast,
gradient scaler, memory format; every refusal is one line naming the fix."""

from __future__ import annotations

import pytest
import torch

from nas.device import CPU, Runtime, check_precision, resolve_device


def test_auto_and_cpu_resolve_here():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("CPU") == torch.device("cpu")


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """The CUDA branches of device resolution, without a GPU: torch.cuda reports two devices."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)


def test_cuda_resolution_with_a_simulated_gpu(two_fake_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"--device cuda:2: there are 2 CUDA device\(s\), cuda:0..cuda:1"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match=r"cuda:0 \(Fake T4\) has no bfloat16 support; use fp16 or fp32"):
        check_precision("bf16", torch.device("cuda", 0))
    assert check_precision("fp16", torch.device("cuda", 0)) == "fp16"
    runtime = Runtime.create("cuda", "fp16")
    assert runtime.channels_last and runtime.pin_memory and runtime.autocast_dtype == torch.float16
    assert runtime.describe() == "cuda:0 (Fake T4), fp16"


@pytest.mark.parametrize(
    ("device", "precision", "fragment"),
    [
        ("gpu", "fp32", "--device must be one of auto, cpu, cuda, cuda:N, mps, but got 'gpu'"),
        ("cpu", "fp16", "--precision fp16 needs a GPU (CUDA or MPS)"),
        ("cpu", "fp8", "--precision must be one of fp32, bf16, fp16, but got 'fp8'"),
        pytest.param(
            "cuda",
            "fp32",
            "use --device cpu or --device auto",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"),
        ),
        pytest.param(
            "cuda:0",
            "fp32",
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"),
        ),
        pytest.param(
            "mps",
            "fp32",
            "MPS is not available",
            marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="has MPS"),
        ),
    ],
)
def test_unavailable_device_or_precision_is_one_line(device, precision, fragment):
    with pytest.raises(ValueError) as info:
        Runtime.create(device, precision)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_precisions_on_the_cpu():
    plain, bf16 = Runtime.create("cpu"), Runtime.create("cpu", "bf16")
    assert plain.autocast_dtype is None and not plain.grad_scaler().is_enabled()
    assert bf16.autocast_dtype == torch.bfloat16 and not bf16.grad_scaler().is_enabled()
    conv = torch.nn.Conv2d(3, 4, 3)
    with bf16.autocast():
        assert conv(torch.randn(1, 3, 5, 5)).dtype == torch.bfloat16
    with plain.autocast():
        assert conv(torch.randn(1, 3, 5, 5)).dtype == torch.float32
    assert plain.describe() == "cpu, fp32" and CPU.device.type == "cpu" and CPU.precision == "fp32"


def test_channels_last_placement_keeps_results(tiny_space):
    from search_spaces.supernet import Supernet

    torch.manual_seed(0)
    supernet = Supernet(tiny_space).eval()
    x = torch.randn(4, 3, 16, 16)
    expected = supernet(x, tiny_space.largest())
    nhwc = Runtime(torch.device("cpu"), "fp32", channels_last=True)
    nhwc.module(supernet)
    assert supernet.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    moved = nhwc.tensor(x)
    assert moved.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(supernet(moved, tiny_space.largest()), expected, atol=1e-5)


def test_evaluation_batches_shrink_with_resolution(two_fake_gpus):
    """At most EVAL_BATCH_PIXELS input pixels per evaluation batch: the requested size up to
    32 px on the CPU, fewer above (activations of an image-folder run stay modest); GPUs get more."""
    cpu = Runtime.create("cpu")
    assert [cpu.eval_batch_size(r) for r in (8, 24, 32, 48, 224)] == [500, 500, 500, 222, 10]
    assert cpu.eval_batch_size(4096) == 1 and cpu.eval_batch_size(24, cap=64) == 64
    gpu = Runtime(torch.device("cuda", 0), "fp32", channels_last=True)
    assert gpu.eval_batch_size(224) == 256 and gpu.eval_batch_size(32) == 500
