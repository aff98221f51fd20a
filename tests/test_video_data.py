"""The procedural video data set, the conditioned video DiT, its training and sampling, and the attention evidence."""
import math

import pytest
import torch

from smartcompile.demo import video_data as vd
from smartcompile.demo.attention_stats import (_queries_keys, entropy_and_locality, self_attention_stats,
                                               stats_table, token_positions)
from smartcompile.demo.flow_matching import sample
from smartcompile.demo.frame_grid import grid_array, save_frame_grid
from smartcompile.demo.train_video_dit import TrainSettings, held_out_loss, main, train
from smartcompile.demo.video_dit import ConditionedVideoDiT, load_video_dit, save_weights, video_dit_config

@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is as fast, and far faster when other jobs share the cores (a second
    OpenMP thread that is descheduled stalls every op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(frames=2, size=16, patch=2, dim=32, heads=2, depth=1)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return ConditionedVideoDiT(video_dit_config(TINY["frames"], TINY["size"], TINY["patch"], TINY["dim"],
                                                TINY["heads"], TINY["depth"])).eval()


def test_make_batch_is_deterministic():
    a, ca = vd.make_batch(7, 3, 4, 24, 24)
    b, cb = vd.make_batch(7, 3, 4, 24, 24)
    c, _ = vd.make_batch(8, 3, 4, 24, 24)
    assert torch.equal(a, b) and torch.equal(ca, cb)
    assert not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first, second = vd.make_batch(g1, 2, 2, 16, 16), vd.make_batch(g1, 2, 2, 16, 16)
    assert torch.equal(vd.make_batch(g2, 2, 2, 16, 16)[0], first[0])  # a generator's state carries on
    assert not torch.equal(first[0], second[0])


def test_shapes_range_and_condition_ids():
    video, cond = vd.make_batch(0, 5, 3, 20, 28)  # not square
    assert video.shape == (5, 3, 3, 20, 28) and video.dtype == torch.float32
    assert cond.shape == (5, vd.N_TOKENS) and cond.dtype == torch.long
    assert video.min() >= -1 and video.max() <= 1 and video.std() > 0.1
    for slot, field in enumerate(vd.SLOTS):
        names = {vd.VOCAB[int(i)] for i in cond[:, slot]}
        assert all(n.startswith(field + ":") for n in names), (slot, names)


def test_encode_describe_and_errors():
    words = ["tiles", "circle", "red", "stripes", "bounce", "steady", "bar", "blue", "checker", "spin", "pulse"]
    ids = vd.encode(words)
    assert vd.describe(ids) == "tiles | red stripes circle, bounce, steady | blue checker bar, spin, pulse"
    with pytest.raises(ValueError, match=r"words\[2\] = 'teal' is not a colour"):
        vd.encode(words[:2] + ["teal"] + words[3:])
    with pytest.raises(ValueError, match="expected 11"):
        vd.encode(words[:3])
    with pytest.raises(ValueError, match="frames must be a positive int"):
        vd.make_batch(0, 1, 0, 16, 16)
    with pytest.raises(ValueError, match="cond has shape"):
        vd.make_batch(0, 2, 2, 16, 16, cond=ids[None])
    assert "background: dark, gradient, tiles" in vd.vocabulary_description()


def test_every_condition_slot_changes_the_video():
    base = vd.encode(["dark", "square", "red", "stripes", "bounce", "shift", "ring", "blue", "checker", "orbit", "steady"])
    scenes = vd.draw_scenes(11, 1, base[None])
    ref = vd.render(scenes, 6, 32, 32)
    for slot, field in enumerate(vd.SLOTS):
        other = base.clone()
        other[slot] = base[slot] + 1 if vd.VOCAB[int(base[slot]) + 1].startswith(field) else base[slot] - 1
        changed = vd.render(vd.Scenes(other[None], scenes.objects, scenes.scene), 6, 32, 32)
        assert (changed - ref).abs().max() > 0.2, f"slot {slot} ({field}) did not change the video"
    # and the placement alone changes it too: the seed is not a condition
    assert not torch.equal(vd.render(vd.draw_scenes(12, 1, base[None]), 6, 32, 32), ref)


def test_conditioned_dit_keeps_the_demo_layer_names():
    names = [n for n, _ in tiny_model().named_modules()]
    assert "blocks.0.attn" in names and "blocks.0.cross_attn" in names


def test_training_smoke_reduces_the_loss():
    s = TrainSettings(steps=20, batch=4, lr=3e-3, warmup=2, seed=0, **TINY)
    before = held_out_loss(ConditionedVideoDiT(s.model_config()), s.frames, s.size, "cpu")
    result = train(s, progress=False)
    after = held_out_loss(result.model, s.frames, s.size, "cpu")
    assert len(result.losses) == result.steps_done == 20
    assert after < 0.85 * before, f"held-out loss {before:.4f} -> {after:.4f} after 20 steps"


def test_short_clip_stage_then_full_clips():
    s = TrainSettings(steps=4, batch=2, lr=1e-3, warmup=1, short_frames=1, short_steps=2, **TINY)
    assert [s.stage(i) for i in range(4)] == [(1, 4), (1, 4), (2, 2), (2, 2)]  # same frames per step
    result = train(s, progress=False)
    model = result.model
    assert model.cfg.frames == TINY["frames"] and model.rope_cos.shape[0] == model.cfg.tokens
    assert len(result.losses) == 4 and all(math.isfinite(v) for v in result.losses)
    with pytest.raises(ValueError, match="short_frames \\(2\\) must be in 1..frames-1"):
        TrainSettings(steps=4, batch=2, lr=1e-3, short_frames=2, short_steps=2, **TINY)
    with pytest.raises(ValueError, match="set_frames: frames must be a positive"):
        model.set_frames(0)


def test_sampling_shape_and_guidance():
    model = tiny_model()
    # zero-initialised outputs would make the velocity zero and the condition invisible
    for layer in (model.proj_out, model.blocks[0].cross_attn.out):
        torch.nn.init.normal_(layer.weight, std=0.02)
    _, cond = vd.make_batch(0, 2, TINY["frames"], TINY["size"], TINY["size"])
    noise = torch.randn(2, 3, TINY["frames"], TINY["size"], TINY["size"], generator=torch.Generator().manual_seed(0))
    out = sample(model, cond, 4, noise)
    guided = sample(model, cond, 4, noise, guidance=3.0)
    assert out.shape == noise.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, sample(model, cond, 4, noise))  # same noise, same video
    assert not torch.equal(out, guided) and not torch.equal(out, noise)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample(model, cond, 0, noise)


def test_weights_round_trip(tmp_path):
    model = tiny_model()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = save_weights(model, tmp_path / "w.safetensors", metadata={"seed": "0"})
    loaded = load_video_dit(path)
    video, cond = vd.make_batch(0, 1, TINY["frames"], TINY["size"], TINY["size"])
    t = torch.tensor([0.5])
    ref = model.to(torch.bfloat16).float()(video, t, cond)  # saved in bf16: compare with the rounded weights
    assert torch.allclose(loaded(video, t, cond), ref, atol=1e-5)
    with pytest.raises(ValueError, match="metadata\\['seed'\\] must be a str"):
        save_weights(model, tmp_path / "x.safetensors", metadata={"seed": 0})


def test_entropy_and_locality_known_answers():
    pos = token_positions((2, 3, 3))  # 18 tokens; query = token 0 at (0, 0, 0)
    q = pos[:1]
    n = len(pos)
    uniform = torch.full((1, n), 1 / n)
    self_only = torch.zeros(1, n)
    self_only[0, 0] = 1
    far = torch.zeros(1, n)
    far[0, n - 1] = 1  # (1, 2, 2): outside radius_s = 1
    half = torch.zeros(1, n)
    half[0, 0] = half[0, n - 1] = 0.5
    probs = torch.cat([uniform, self_only, far, half])[None]  # (1, 4 rows, n); every row is the same query
    ent, loc = entropy_and_locality(probs, q.expand(4, 3), pos, radius_t=1, radius_s=1)
    # keys within 1 frame and 1 patch of (0, 0, 0): t in {0, 1}, h and w in {0, 1}: 8 of 18
    expect_ent = torch.tensor([[math.log(n), 0.0, 0.0, math.log(2)]])
    expect_loc = torch.tensor([[8 / n, 1.0, 0.0, 0.5]])
    assert torch.allclose(ent, expect_ent, atol=1e-6) and torch.allclose(loc, expect_loc, atol=1e-6)
    with pytest.raises(ValueError, match="probs ends in"):
        entropy_and_locality(probs, q, pos, 1, 1)


def test_attention_stats_recompute_the_real_attention():
    model = tiny_model()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    video, cond = vd.make_batch(0, 1, TINY["frames"], TINY["size"], TINY["size"])
    inputs = (video, torch.tensor([0.5]), cond)
    attn = model.blocks[0].attn
    seen = {}
    pre = attn.register_forward_pre_hook(lambda m, args: seen.setdefault("in", args))
    post = attn.register_forward_hook(lambda m, args, out: seen.setdefault("out", out))
    model(*inputs)
    pre.remove(), post.remove()
    x, cos, sin = seen["in"]
    q, k = _queries_keys(attn, x, cos, sin)
    b, n, d = x.shape
    v = attn.qkv(x).view(b, n, 3, attn.heads, d // attn.heads)[:, :, 2].transpose(1, 2)
    probs = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
    out = attn.out((probs @ v).transpose(1, 2).reshape(b, n, d))
    assert torch.allclose(out, seen["out"], atol=1e-5)  # the maps we measure are the ones SDPA applied
    stats = self_attention_stats(model, inputs, model.cfg.grid, queries=64)
    assert [s["layer"] for s in stats] == ["blocks.0.attn"]
    assert 0 < stats[0]["relative_entropy"] <= 1 and 0 <= stats[0]["locality"] <= 1
    assert len(stats[0]["heads"]["locality"]) == TINY["heads"]
    assert "blocks.0.attn" in stats_table(stats, stats)


def test_frame_grid(tmp_path):
    videos = list(vd.make_batch(0, 2, 3, 16, 16)[0])
    assert grid_array(videos, gap=2).shape == (2 * 16 + 2, 3 * 16 + 4, 3)
    assert grid_array(videos, max_frames=2).shape[1] == 2 * 16 + 2
    with pytest.raises(ValueError, match=r"videos\[1\] has shape"):
        grid_array([videos[0], videos[1][:, :2]])
    path = save_frame_grid(videos, tmp_path / "g.png", labels=["a", "b"], title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_weights_curve_and_card(tmp_path):
    out = tmp_path / "run"
    argv = ["--steps", "3", "--batch", "2", "--frames", "2", "--size", "16", "--dim", "32", "--heads", "2",
            "--depth", "1", "--sample-steps", "2", "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    for name in ("video_dit.safetensors", "loss.json", "loss.png", "samples.png", "attention_stats.json", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    card = (out / "MODEL_CARD.md").read_text()
    assert "python -m smartcompile.demo.train_video_dit --steps 3" in card and "| blocks.0.attn |" in card
    assert load_video_dit(out / "video_dit.safetensors").cfg.tokens == 2 * 8 * 8


def test_render_keeps_every_tensor_on_the_requested_device():
    # regression: the palette lived on the CPU and indexing it with CUDA ids failed on the GPU;
    # the meta device fails the same way on any machine
    video, cond = vd.make_batch(0, 2, 3, 16, 16, device="meta")
    assert video.device.type == "meta" and cond.device.type == "meta" and video.shape == (2, 3, 3, 16, 16)
