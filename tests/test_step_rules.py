"""Issue 12: per-denoising-step rules (policy version 2), the step source (`smartcompile.step`,
`smartcompile.track_steps` on a diffusers pipeline), no recompiles when the step changes."""
import pytest
import torch

import smartcompile
from smartcompile.backends.intercept import intercepting
from smartcompile.errors import PolicyError

diffusers = pytest.importorskip("diffusers")

BY_STEP = {"version": 2, "default": {"by_step": {"0": "flash", "1-2": "sage", "3-": "flash"}, "otherwise": "flash"}}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _wan(in_channels=4, layers=2):
    torch.manual_seed(0)
    return diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=in_channels,
        out_channels=in_channels, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=layers, rope_max_seq_len=32).eval()


def _backends_of_one_call(fn) -> set:
    seen = set()
    with intercepting(lambda c: seen.add(c.backend)):
        fn()
    return seen


def test_step_rules_switch_without_recompiling():
    model = _wan()
    x, t, enc = torch.randn(1, 4, 2, 8, 8), torch.tensor([500]), torch.randn(1, 7, 32)
    compiled = torch.compile(model, backend="smartattn", options={"policy": BY_STEP})
    run = lambda: compiled(x, t, enc, return_dict=False)
    with torch.no_grad():
        run()  # compile outside any step
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        seen = []
        for i in range(5):
            with smartcompile.step(i):
                seen.append(_backends_of_one_call(run))
        outside = _backends_of_one_call(run)
    assert seen == [{"flash"}, {"sage"}, {"sage"}, {"flash"}, {"flash"}]
    assert outside == {"flash"}  # "otherwise"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # no recompile per step


def test_step_rules_change_numerics_only_at_their_steps():
    model = _wan()
    x, t, enc = torch.randn(1, 4, 2, 8, 8), torch.tensor([500]), torch.randn(1, 7, 32)
    with torch.no_grad():
        eager = model(x, t, enc, return_dict=False)[0]
        compiled = torch.compile(model, backend="smartattn", options={"policy": BY_STEP})
        outs = []
        for i in range(4):
            with smartcompile.step(i):
                outs.append(compiled(x, t, enc, return_dict=False)[0])
    for i in (0, 3):
        torch.testing.assert_close(outs[i], eager, atol=2e-5, rtol=1e-4)
    for i in (1, 2):
        assert (outs[i] - eager).abs().max() > 1e-4


def _tiny_pipeline():
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    return WanPipeline(tokenizer=None, text_encoder=None, transformer=_wan(in_channels=16), vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def test_track_steps_follows_a_diffusers_pipeline_loop():
    pipe = smartcompile.track_steps(_tiny_pipeline())
    pipe.transformer = torch.compile(pipe.transformer, backend="smartattn", options={"policy": BY_STEP})
    steps_seen = []
    with torch.no_grad(), intercepting(lambda c: steps_seen.append((smartcompile.backends.denoising_step.current_step(),
                                                                    c.backend))):
        pipe(prompt_embeds=torch.randn(1, 7, 32), negative_prompt_embeds=torch.randn(1, 7, 32), height=32, width=32,
             num_frames=5, num_inference_steps=4, guidance_scale=5.0, output_type="latent")
    by_step = {}
    for step, backend in steps_seen:
        by_step.setdefault(step, set()).add(backend)
    # 4 steps, 2 transformer calls each (classifier-free guidance), 4 attention calls per forward
    assert len(steps_seen) == 4 * 2 * 4
    assert by_step == {0: {"flash"}, 1: {"sage"}, 2: {"sage"}, 3: {"flash"}}
    assert smartcompile.backends.denoising_step.current_step() is None  # the pipeline call ended step mode


def test_track_steps_rejects_what_is_not_a_pipeline():
    with pytest.raises(TypeError, match="has no"):
        smartcompile.track_steps(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("bad, where", [
    ({"version": 1, "layers": {"a": {"by_step": {"0": "sage"}}}}, 'policy.layers["a"].by_step: per-step rules need'),
    ({"version": 2, "layers": {"a": {"by_step": {"0-3": "sage", "2": "flash"}}}}, 'by_step["2"]: overlaps'),
    ({"version": 2, "layers": {"a": {"by_step": {"2-1": "sage"}}}}, 'by_step["2-1"]: step range'),
    ({"version": 2, "layers": {"a": {"by_step": {"-1": "sage"}}}}, 'by_step["-1"]: step range'),
    ({"version": 2, "layers": {"a": {"by_step": {}}}}, "empty object"),
    ({"version": 2, "layers": {"a": {"by_step": {"0": {"by_step": {"0": "sage"}}}}}}, "another"),
    ({"version": 2, "layers": {"a": {"by_step": {"0": "sag"}}}}, 'by_step["0"]: backend'),
    ({"version": 2, "layers": {"a": {"by_step": {"0": "sage"}, "backend": "sage"}}}, "unknown key"),
])
def test_bad_step_rules_name_the_json_path(bad, where):
    with pytest.raises(PolicyError, match=None) as err:
        smartcompile.Policy.from_dict(bad)
    assert where in str(err.value)


def test_version_1_files_load_unchanged_and_step_rules_round_trip():
    v1 = {"version": 1, "default": "flash", "layers": {"blocks.0.attn1": "sage"}}
    assert smartcompile.Policy.from_dict(v1).to_dict() == v1
    policy = smartcompile.Policy.from_dict(BY_STEP)
    assert smartcompile.Policy.from_dict(policy.to_dict()) == policy
    assert policy.default.at_step(None).backend == "flash" and policy.default.at_step(2).backend == "sage"


def test_step_index_is_checked():
    with pytest.raises(ValueError, match="index must be >= 0"):
        with smartcompile.step(-1):
            pass
    with pytest.raises(TypeError, match="must be an int"):
        with smartcompile.step(1.5):
            pass


def test_a_pipeline_call_that_raises_leaves_no_stale_step():
    pipe = smartcompile.track_steps(_tiny_pipeline())
    calls = []

    def fail_at_second(*args, **kw):
        calls.append(smartcompile.backends.denoising_step.current_step())
        if len(calls) == 3:  # step 1's first forward
            raise RuntimeError("boom")
        return original(*args, **kw)

    original = pipe.transformer.forward
    pipe.transformer.forward = fail_at_second
    with torch.no_grad(), pytest.raises(RuntimeError, match="boom"):
        pipe(prompt_embeds=torch.randn(1, 7, 32), negative_prompt_embeds=torch.randn(1, 7, 32), height=32, width=32,
             num_frames=5, num_inference_steps=3, guidance_scale=5.0, output_type="latent")
    assert calls == [0, 0, 1]
    assert smartcompile.backends.denoising_step.current_step() is None


def _run_pipe(pipe, steps=3):
    seen = []
    with torch.no_grad(), intercepting(lambda c: seen.append(smartcompile.backends.denoising_step.current_step())):
        pipe(prompt_embeds=torch.randn(1, 7, 32), negative_prompt_embeds=torch.randn(1, 7, 32), height=32, width=32,
             num_frames=5, num_inference_steps=steps, guidance_scale=5.0, output_type="latent")
    return sorted(set(seen))


def test_track_steps_follows_a_shared_or_replaced_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    p1, p2 = _tiny_pipeline(), _tiny_pipeline()
    p2.scheduler = p1.scheduler  # diffusers' from_pipe shares components like this
    for p in (p1, p2):
        smartcompile.track_steps(p)
        p.transformer = torch.compile(p.transformer, backend="smartattn", options={"policy": BY_STEP})
    assert _run_pipe(p2) == [0, 1, 2]
    assert smartcompile.backends.denoising_step.current_step() is None
    p1.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)  # replaced after track_steps
    assert _run_pipe(p1) == [0, 1, 2]
    assert smartcompile.backends.denoising_step.current_step() is None
