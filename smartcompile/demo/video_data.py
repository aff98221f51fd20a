"""A deterministic procedural video data set: two textured shapes moving over a background.

Each video shows two objects (the second drawn over the first, so they occlude each other) that
bounce off the borders, orbit, travel on a wave or spin in place, while their colour stays,
shifts to another colour or pulses. What the video shows is set by 11 condition tokens (integer
ids into `VOCAB`); where exactly it happens (start positions, sizes, speeds, phases, background
tints) is drawn from a seeded generator. A model must therefore read the condition through
cross-attention and attend across space and time to keep each object's shape, texture and
motion consistent.

Pure torch and vectorised: a batch of 8 videos of 16 frames at 64x64 renders in a few
milliseconds on a GPU and well under a second on a CPU. The random numbers are always drawn on
the CPU, so a seed gives the same scenes on every device.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Union

import torch

FIELDS = {
    "background": ("dark", "gradient", "tiles"),
    "shape": ("circle", "square", "triangle", "ring", "cross", "bar"),
    "colour": ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white"),
    "texture": ("solid", "stripes", "checker", "rings"),
    "motion": ("bounce", "orbit", "wave", "spin"),
    "change": ("steady", "shift", "pulse"),
}
OBJECTS = 2
OBJECT_FIELDS = ("shape", "colour", "texture", "motion", "change")
# the field each condition token describes: one global token, then five per object
SLOTS = ("background",) + OBJECT_FIELDS * OBJECTS
N_TOKENS = len(SLOTS)
NULL_ID = 0  # "no condition": what classifier-free guidance trains and samples against
VOCAB = ("<null>",) + tuple(f"{f}:{v}" for f, values in FIELDS.items() for v in values)
_OFFSET = {f: VOCAB.index(f"{f}:{values[0]}") for f, values in FIELDS.items()}  # id of each field's first value

PALETTE = torch.tensor([
    [0.92, 0.20, 0.18], [0.98, 0.55, 0.10], [0.95, 0.88, 0.20], [0.25, 0.80, 0.30],
    [0.20, 0.85, 0.90], [0.20, 0.35, 0.95], [0.65, 0.30, 0.90], [0.95, 0.95, 0.95],
])
SHIFT_STEP = 3  # "shift" blends a colour towards the palette colour three places on
SHIFT_FRAMES = 15  # a shift completes in 15 frames and a pulse repeats every 6, whatever the clip length
PULSE_FRAMES = 6
_OBJECT_PARAMS = 11  # uniform numbers per object; their meaning is in _trajectory, _texture, _colours
_SCENE_PARAMS = 7  # uniform numbers per scene, for the background


def vocabulary_description() -> str:
    """The condition vocabulary as text: token slots and the values each slot takes."""
    lines = [f"{N_TOKENS} condition tokens per video, ids into a vocabulary of {len(VOCAB)} "
             f"(id {NULL_ID} = <null>, the unconditional token):"]
    lines.append("  slot 0: background: " + ", ".join(FIELDS["background"]))
    for i in range(OBJECTS):
        first = 1 + i * len(OBJECT_FIELDS)
        lines.append(f"  slots {first}-{first + len(OBJECT_FIELDS) - 1}: object {i + 1} "
                     f"({'drawn over object 1' if i else 'drawn first'}): " + "; ".join(
                         f"{f}: {', '.join(FIELDS[f])}" for f in OBJECT_FIELDS))
    return "\n".join(lines)


def encode(words: Sequence[str]) -> torch.Tensor:
    """Condition ids (N_TOKENS,) from one value per slot, in slot order, e.g.
    ["tiles", "circle", "red", "stripes", "bounce", "steady", "bar", "blue", "checker", "spin", "pulse"]."""
    if len(words) != N_TOKENS:
        raise ValueError(f"encode: words has {len(words)} entries, expected {N_TOKENS} (one per slot: {SLOTS})")
    ids = []
    for i, (field, word) in enumerate(zip(SLOTS, words)):
        if word not in FIELDS[field]:
            raise ValueError(f"encode: words[{i}] = {word!r} is not a {field}; allowed: {', '.join(FIELDS[field])}")
        ids.append(_OFFSET[field] + FIELDS[field].index(word))
    return torch.tensor(ids, dtype=torch.long)


def describe(cond: torch.Tensor) -> str:
    """A caption for one row of condition ids, e.g. 'tiles | red striped circle, bounce, steady | ...'."""
    if cond.shape != (N_TOKENS,):
        raise ValueError(f"describe: cond has shape {tuple(cond.shape)}, expected ({N_TOKENS},)")
    words = [VOCAB[int(i)].split(":")[-1] for i in cond]
    parts = [words[0]]
    for i in range(OBJECTS):
        shape, colour, texture, motion, change = words[1 + i * 5: 6 + i * 5]
        parts.append(f"{colour} {texture} {shape}, {motion}, {change}")
    return " | ".join(parts)


@dataclasses.dataclass(frozen=True)
class Scenes:
    """What to render: condition ids (B, N_TOKENS) and the uniform numbers in [0, 1) that place
    the objects (B, OBJECTS, _OBJECT_PARAMS) and tint the background (B, _SCENE_PARAMS)."""
    cond: torch.Tensor
    objects: torch.Tensor
    scene: torch.Tensor


def _generator(seed: Union[int, torch.Generator], name: str) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError(f"{name}: the generator must be a CPU generator (got {seed.device}); "
                             "scenes are drawn on the CPU so that a seed means the same scenes everywhere")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{name}: seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def random_conditions(seed: Union[int, torch.Generator], batch: int) -> torch.Tensor:
    """Condition ids (batch, N_TOKENS), every slot uniform over its field's values."""
    g = _generator(seed, "random_conditions")
    ids = [_OFFSET[f] + torch.randint(len(FIELDS[f]), (batch,), generator=g) for f in SLOTS]
    return torch.stack(ids, dim=1)


def draw_scenes(seed: Union[int, torch.Generator], batch: int, cond: Optional[torch.Tensor] = None) -> Scenes:
    """Random scenes; with `cond` (batch, N_TOKENS) given, only the placement is drawn."""
    if batch < 1:
        raise ValueError(f"draw_scenes: batch must be >= 1, got {batch}")
    g = _generator(seed, "draw_scenes")
    if cond is None:
        cond = random_conditions(g, batch)
    elif cond.shape != (batch, N_TOKENS):
        raise ValueError(f"draw_scenes: cond has shape {tuple(cond.shape)}, expected ({batch}, {N_TOKENS})")
    objects = torch.rand(batch, OBJECTS, _OBJECT_PARAMS, generator=g)
    scene = torch.rand(batch, _SCENE_PARAMS, generator=g)
    return Scenes(cond.long().cpu(), objects, scene)


def _lerp(lo: float, hi: float, u: torch.Tensor) -> torch.Tensor:
    return lo + (hi - lo) * u


def _reflect(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Fold an unbounded path into [lo, hi] as a ball bouncing off both walls would move."""
    span = (hi - lo).clamp_min(1e-6)
    y = torch.remainder(x - lo, 2 * span)
    return lo + span - (y - span).abs()


def _trajectory(motion, u, r, t, ext_x, ext_y):
    """Centre (cx, cy) and rotation angle, each (B, T), of one object under its motion type."""
    col = lambda i: u[:, i, None]  # noqa: E731  (B, 1): broadcasts against t (1, T)
    r = r[:, None]
    sign = torch.where(col(6) < 0.5, -1.0, 1.0)
    x0, y0 = r + col(0) * (ext_x - 2 * r), r + col(1) * (ext_y - 2 * r)
    ang, speed = col(3) * 2 * math.pi, _lerp(0.035, 0.065, col(4))
    omega, phase, theta0 = _lerp(0.25, 0.45, col(5)) * sign, col(8) * 2 * math.pi, col(7) * 2 * math.pi
    # bounce: straight line, reflected at the borders
    bx = _reflect(x0 + speed * ang.cos() * t, r, ext_x - r)
    by = _reflect(y0 + speed * ang.sin() * t, r, ext_y - r)
    # orbit: a circle around a centre chosen so that the whole orbit stays inside
    radius = _lerp(0.10, 0.20, col(10))
    ocx = r + radius + col(0) * (ext_x - 2 * (r + radius))
    ocy = r + radius + col(1) * (ext_y - 2 * (r + radius))
    ox, oy = ocx + radius * (omega * t + phase).cos(), ocy + radius * (omega * t + phase).sin()
    # wave: bounce horizontally while oscillating vertically
    amp = _lerp(0.06, 0.14, col(10))
    wx = _reflect(x0 + speed * sign * t, r, ext_x - r)
    wy = r + amp + col(1) * (ext_y - 2 * (r + amp)) + amp * (1.5 * omega * t + phase).sin()
    # spin: stays put and turns fast; the other motions turn slowly
    sx, sy = x0.expand_as(bx), y0.expand_as(by)
    idx = (motion, torch.arange(len(motion), device=motion.device))
    cx = torch.stack([bx, ox, wx, sx])[idx]
    cy = torch.stack([by, oy, wy, sy])[idx]
    turn = torch.where(motion[:, None] == FIELDS["motion"].index("spin"), _lerp(0.2, 0.4, col(5)), 0.05) * sign
    return cx, cy, theta0 + turn * t


def _shape_distance(shape, u, v):
    """Signed distance to each object's outline, in units of its radius (negative inside)."""
    rad = (u * u + v * v).sqrt()
    s3 = math.sqrt(3) / 2
    d = torch.stack([
        rad - 1,  # circle
        torch.maximum(u.abs(), v.abs()) - 0.8,  # square
        torch.maximum(-v, torch.maximum(s3 * u + v / 2, -s3 * u + v / 2)) - 0.55,  # triangle
        (rad - 0.75).abs() - 0.3,  # ring
        torch.minimum(torch.maximum(u.abs() - 1.0, v.abs() - 0.32), torch.maximum(u.abs() - 0.32, v.abs() - 1.0)),  # cross
        torch.maximum(u.abs() - 1.1, v.abs() - 0.38),  # bar
    ])
    return d[shape, torch.arange(len(shape), device=shape.device)]


def _texture(texture, freq, u, v):
    """Shade in [0.3, 1] from the object's texture, in its own rotating frame."""
    soft = lambda z: (0.5 + 2 * z).clamp(0, 1)  # noqa: E731  (anti-aliased square wave)
    f = math.pi * freq
    tex = torch.stack([
        torch.ones_like(u),  # solid
        soft((f * u).sin()),  # stripes
        soft((f * u).sin() * (f * v).sin()),  # checker
        soft((1.5 * f * (u * u + v * v).sqrt()).sin()),  # rings
    ])[texture, torch.arange(len(texture), device=texture.device)]
    return 0.3 + 0.7 * tex


def _colours(colour, change, phase, t):
    """RGB per frame (B, 3, T) of each object under its colour change."""
    palette = PALETTE.to(colour.device)
    base = palette[colour][:, :, None]
    target = palette[(colour + SHIFT_STEP) % len(palette)][:, :, None]
    s = (0.5 - 0.5 * (math.pi * t / SHIFT_FRAMES).clamp(max=math.pi).cos())[None, None]
    shift = base + (target - base) * s
    pulse = base * (0.6 + 0.4 * (2 * math.pi * t / PULSE_FRAMES + phase[:, None, None]).cos())
    return torch.stack([base.expand_as(shift), shift, pulse])[change, torch.arange(len(change), device=change.device)]


def _background(kind, u, x, y, ext_x, ext_y):
    """Static background (B, 3, 1, H, W): a dark tint, a gradient to a lighter tint, or tiles."""
    c1 = (0.04 + 0.16 * u[:, :3])[:, :, None, None, None]
    c2 = (0.25 + 0.35 * u[:, 4:7])[:, :, None, None, None]
    ang = (u[:, 3] * 2 * math.pi)[:, None, None, None, None]
    proj = (x - ext_x / 2) * ang.cos() + (y - ext_y / 2) * ang.sin()
    gradient = c1 + (c2 - c1) * (0.5 + proj / max(ext_x, ext_y)).clamp(0, 1)
    tiles = c1 + 0.12 * ((torch.floor(x / 0.25) + torch.floor(y / 0.25)) % 2)
    dark = c1.expand_as(gradient)
    return torch.stack([dark, gradient, tiles.expand_as(gradient)])[kind, torch.arange(len(kind), device=kind.device)]


def render(scenes: Scenes, frames: int, height: int, width: int, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """Videos (B, 3, frames, height, width) in [-1, 1], float32, on `device`."""
    for name, value in (("frames", frames), ("height", height), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"render: {name} must be a positive int, got {value!r}")
    if min(height, width) < 8:
        raise ValueError(f"render: height and width must be >= 8 pixels, got {height}x{width}")
    cond, obj, sc = (x.to(device) for x in (scenes.cond, scenes.objects, scenes.scene))
    s = min(height, width)  # lengths are in units of the shorter side, so shapes stay round
    ext_x, ext_y = width / s, height / s
    x = ((torch.arange(width, device=device) + 0.5) / s).view(1, 1, 1, 1, -1)
    y = ((torch.arange(height, device=device) + 0.5) / s).view(1, 1, 1, -1, 1)
    t = torch.arange(frames, device=device, dtype=torch.float32)[None]
    video = _background(cond[:, 0] - _OFFSET["background"], sc, x, y, ext_x, ext_y).expand(-1, -1, frames, -1, -1)
    for i in range(OBJECTS):
        shape, colour, texture, motion, change = (cond[:, 1 + i * 5 + j] - _OFFSET[f] for j, f in enumerate(OBJECT_FIELDS))
        u = obj[:, i]
        r = _lerp(0.13, 0.2, u[:, 2])
        cx, cy, theta = _trajectory(motion, u, r, t, ext_x, ext_y)
        dx, dy = x - cx[:, None, :, None, None], y - cy[:, None, :, None, None]  # (B, 1, T, H, W)
        c, sn = theta.cos()[:, None, :, None, None], theta.sin()[:, None, :, None, None]
        rr = r.view(-1, 1, 1, 1, 1)
        lu, lv = (c * dx + sn * dy) / rr, (-sn * dx + c * dy) / rr  # the object's own rotating frame
        dist = _shape_distance(shape, lu, lv)
        alpha = (0.5 - dist * rr * s).clamp(0, 1)  # one pixel of anti-aliasing at the outline
        shade = _texture(texture, _lerp(2.0, 3.0, u[:, 9]).view(-1, 1, 1, 1, 1), lu, lv)
        rgb = _colours(colour, change, u[:, 8] * 2 * math.pi, t[0])[:, :, :, None, None]
        video = video * (1 - alpha) + rgb * shade * alpha
    return (video * 2 - 1).clamp(-1, 1).contiguous()


def make_batch(seed: Union[int, torch.Generator], batch: int, frames: int, height: int, width: int,
               device: Union[str, torch.device] = "cpu", cond: Optional[torch.Tensor] = None):
    """(videos (B, 3, T, H, W) in [-1, 1], condition ids (B, N_TOKENS)), both on `device`.

    The same seed (or a generator in the same state) gives the same batch; pass `cond` to choose
    what the videos show and let the seed choose only where."""
    scenes = draw_scenes(seed, batch, cond)
    return render(scenes, frames, height, width, device), scenes.cond.to(device)
