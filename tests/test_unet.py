import pytest
import torch

from oodkit import UNet, UNetConfig, unet_from_preset


@pytest.mark.parametrize("size,mult", [(8, (1, 2)), (28, (1, 2, 2)), (32, (1, 2, 2, 2)), (64, (1, 2, 2, 2))])
def test_shapes_any_size_and_channels(size, mult):
    net = UNet(ch=8, ch_mult=mult, num_res_blocks=1, attn_resolutions=(size // 2,), dropout=0.0,
               in_channels=3, image_size=size, num_classes=12)
    assert net(torch.randn(2, 3, size, size)).shape == (2, 12)
    dense = UNet(ch=8, ch_mult=mult, num_res_blocks=1, attn_resolutions=(), in_channels=1, image_size=size,
                 time_conditioning=True)
    assert dense(torch.randn(2, 1, size, size), torch.tensor([3, 7])).shape == (2, 1, size, size)


def test_paper_preset_size():
    net = unet_from_preset("paper", in_channels=3, image_size=32, num_classes=1002)
    n = sum(p.numel() for p in net.parameters())
    assert 32e6 < n < 34e6  # the paper's "about 33M"


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError, match="not divisible"):
        UNet(ch=8, ch_mult=(1, 2, 2, 2), image_size=28)
    with pytest.raises(ValueError, match="8..64"):
        UNet(ch=8, image_size=128)
    net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), in_channels=3, image_size=8, num_classes=5)
    with pytest.raises(ValueError, match=r"expected input \(B, 3, H, W\)"):
        net(torch.randn(2, 1, 8, 8))
    tnet = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8, time_conditioning=True)
    with pytest.raises(ValueError, match="time-conditioned"):
        tnet(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown UNet config"):
        UNetConfig.from_dict({"chans": 3})


def test_double_backprop_through_input_gradient():
    torch.manual_seed(0)
    net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4, 8), dropout=0.0, in_channels=1,
               image_size=8, num_classes=6)
    torch.nn.init.normal_(net.head.weight, std=0.1)  # zero-init head would give zero input gradient
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad(net(x)[:, 2].sum(), x, create_graph=True)
    (g ** 2).sum().backward()
    # every parameter but the biases after the last nonlinearity (constant in x)
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == ["head_conv.bias", "head.bias"]
    assert net.conv_in.weight.grad.abs().sum() > 0 and net.head.weight.grad.abs().sum() > 0
    # finite-difference check of one second-order entry, in float64
    net = net.double()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    w = net.conv_in.weight

    def gsq():
        xi = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(net(xi)[:, 2].sum(), xi, create_graph=True)
        return (gx ** 2).sum()

    net.zero_grad()
    gsq().backward()
    analytic = w.grad[0, 0, 1, 1].item()
    h = 1e-6
    with torch.no_grad():
        w[0, 0, 1, 1] += h
    up = gsq().item()
    with torch.no_grad():
        w[0, 0, 1, 1] -= 2 * h
    down = gsq().item()
    assert abs((up - down) / (2 * h) - analytic) < 1e-5 * max(1.0, abs(analytic))


def test_features_are_the_pooled_decoder_output_the_head_reads():
    """``return_features`` gives the decoder's output averaged over space (the input of
    the classification head), from the same pass as the logits: the head's own conv is
    trained to read the noise level only, and its pooled output separates Fashion-MNIST
    from MNIST and from CIFAR-10 worse (benchmarks/results/feature_layers.md)."""
    torch.manual_seed(0)
    net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
               in_channels=1, image_size=8, num_classes=5)
    torch.nn.init.normal_(net.head.weight)
    seen = []
    net.norm_out.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(3, 1, 8, 8)
    out, feats = net(x, return_features=True)
    assert len(seen) == 1 and feats.shape == (3, 8)
    torch.testing.assert_close(feats, seen[0].mean(dim=(2, 3)))
    torch.testing.assert_close(out, net(x))


def test_features_stay_float32_under_bf16_autocast():
    """Under autocast the decoder runs in bf16; its spatial mean is taken in float32 (as
    the logits are), so the Gaussian score does not read bf16-rounded features."""
    torch.manual_seed(0)
    net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
               in_channels=1, image_size=8, num_classes=5)
    seen = []
    net.norm_out.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, feats = net(torch.randn(3, 1, 8, 8), return_features=True)
    assert seen[0].dtype == torch.bfloat16 and feats.dtype == torch.float32 and out.dtype == torch.float32
    torch.testing.assert_close(feats, seen[0].float().mean(dim=(2, 3)), rtol=0, atol=0)
