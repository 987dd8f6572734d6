"""What an architecture is: ``ArchSpec``, search spaces, model builders and the supernet."""

from .arch import (
    ArchSpec,
    BlockPlan,
    StageSpec,
    block_plan,
    conv_out_size,
    final_size,
    hidden_channels,
    make_divisible,
    parse_arch,
)
from .builder import InvertedResidual, InvertedResidualNet, build_model, example_input
from .export import export_onnx
from .mobilenet import mobilenet_v2
from .space import SearchSpace, StageChoices, sample_spec
from .spaces import DEFAULT_PROXY_SPACE, SPACES, get_space, mobilenetv2_cifar, mobilenetv2_imagenet, proxy_digits
from .supernet import Supernet
from .zoo import PUBLISHED, REFERENCE_NAMES, reference_arch

__all__ = [
    "ArchSpec",
    "BlockPlan",
    "DEFAULT_PROXY_SPACE",
    "PUBLISHED",
    "REFERENCE_NAMES",
    "InvertedResidual",
    "InvertedResidualNet",
    "SPACES",
    "SearchSpace",
    "StageChoices",
    "StageSpec",
    "Supernet",
    "block_plan",
    "build_model",
    "conv_out_size",
    "example_input",
    "export_onnx",
    "final_size",
    "get_space",
    "hidden_channels",
    "make_divisible",
    "mobilenet_v2",
    "mobilenetv2_cifar",
    "mobilenetv2_imagenet",
    "parse_arch",
    "proxy_digits",
    "reference_arch",
    "sample_spec",
]
