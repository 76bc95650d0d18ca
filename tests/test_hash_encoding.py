"""The faster pure-torch hash encoding gives nerfstudio's outputs and gradients, and the CPU model uses it."""

import pytest
import torch

pytest.importorskip("nerfstudio")

from nerfstudio.data.scene_box import SceneBox  # noqa: E402
from nerfstudio.field_components.encodings import HashEncoding  # noqa: E402

from nerfstudio_plugin import methods  # noqa: E402
from nerfstudio_plugin.hash_encoding import FastHashEncoding, use_fast_hash_encoding  # noqa: E402


def test_same_outputs_and_gradients_as_nerfstudio():
    stock = HashEncoding(num_levels=6, min_res=16, max_res=512, log2_hashmap_size=12, implementation="torch")
    fast = HashEncoding(num_levels=6, min_res=16, max_res=512, log2_hashmap_size=12, implementation="torch")
    fast.load_state_dict(stock.state_dict())
    assert use_fast_hash_encoding(fast) == 1 and isinstance(fast, FastHashEncoding)
    points = torch.rand(2000, 3) * 1.4 - 0.2  # outside [0, 1] too: negative grid coordinates
    assert torch.equal(stock(points), fast(points))
    (stock(points) ** 2).sum().backward()
    (fast(points) ** 2).sum().backward()
    torch.testing.assert_close(fast.hash_table.grad, stock.hash_table.grad, rtol=1e-5, atol=1e-7)


def test_the_cpu_model_uses_it_everywhere():
    config = methods.cpu_config("test", None).pipeline.model
    model = config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=3, metadata={})
    encodings = [m for m in model.modules() if isinstance(m, HashEncoding)]
    assert len(encodings) == 3 and all(type(m) is FastHashEncoding for m in encodings)  # field + 2 proposal networks
