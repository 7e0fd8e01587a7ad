"""Writes colab/autox3d_quickstart.ipynb and colab/x3d_model_zoo.ipynb (outputs cleared): python tools/make_notebooks.py"""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

INSTALL = '''# Installs autox3d_jax when it is missing (a fresh Colab runtime); elsewhere this cell does nothing.
# AUTOX3D_SOURCE: this checkout's folder (upload it, or mount Drive), a wheel built with `pip wheel .`,
# or your git URL (git+https://...). Nothing else is downloaded at run time.
import importlib.util, os, subprocess, sys
AUTOX3D_SOURCE = os.environ.get("AUTOX3D_SOURCE", "")   # e.g. "/content/autox3d_jax"
if importlib.util.find_spec("autox3d_jax") is None:
    if not AUTOX3D_SOURCE:
        raise RuntimeError("autox3d_jax is not installed: set AUTOX3D_SOURCE above to this checkout's folder, "
                           "a wheel or a git URL, then rerun this cell")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", AUTOX3D_SOURCE])
import autox3d_jax
print("autox3d_jax", autox3d_jax.__version__)'''

quick = new_notebook(cells=[
    new_markdown_cell(
        "# autox3d_jax quickstart\n\n"
        "Search a 3D video network on the embedded moving-digits benchmark (rendered locally: no download), "
        "retrain the searched network and an X3D-like baseline at matched FLOPs, evaluate both and show the "
        "report. Every `python -m autox3d_jax.main` mode is a function in `autox3d_jax.run`; configs ship "
        "with the package (`autox3d_jax.configs`).\n\n"
        "`VARIANT = 'tiny'` runs in a few minutes on a CPU runtime; `''` is the README's demo (about 8 minutes "
        "on 2 CPU cores, faster on a GPU/TPU runtime)."),
    new_code_cell(INSTALL),
    new_code_cell(
        "import os, tempfile\n"
        "from autox3d_jax import config as config_lib, configs, run\n"
        "from autox3d_jax.cpu import hostmem\n"
        "from autox3d_jax.train import setup\n\n"
        "hostmem.keep_freed_memory_on_cpu()        # what `main` does on CPU (no effect elsewhere)\n"
        "VARIANT = os.environ.get('AUTOX3D_NOTEBOOK_VARIANT', 'tiny')\n"
        "cfg = configs.get('demo', VARIANT)\n"
        "cfg.search.strategy = 'probabilistic'     # or dnas | gdas | spos | msg\n"
        "config_lib.validate(cfg); setup.check_devices(cfg); setup.check_space(cfg)\n"
        "setup.enable_compilation_cache(cfg)        # as main does: a rerun loads compiled programs\n"
        "WORKDIR = os.environ.get('AUTOX3D_NOTEBOOK_WORKDIR') or tempfile.mkdtemp(prefix='autox3d_demo_')\n"
        "print(f\"{cfg.data.name}: {cfg.search.strategy} search, {cfg.search.steps} steps, then \"\n"
        "      f\"{cfg.train.steps} retraining steps per network -> {WORKDIR}\")"),
    new_code_cell("models = run.demo(cfg, WORKDIR)"),
    new_markdown_cell("The report: the architecture table, the Pareto plot and how the search's decisions evolved."),
    new_code_cell(
        "from IPython.display import Image, Markdown, display\n"
        "report_dir = os.path.join(WORKDIR, 'report')\n"
        "display(Markdown(open(os.path.join(report_dir, 'report.md')).read()))\n"
        "display(Image(os.path.join(report_dir, 'pareto.png')))\n"
        "display(Image(os.path.join(report_dir, 'decisions.png')))"),
])

zoo_nb = new_notebook(cells=[
    new_markdown_cell(
        "# The X3D family in autox3d_jax\n\n"
        "X3D-XS/S/M/L/XL as built here (equal to pytorchvideo's, see `tests/test_torch_equivalence.py`): "
        "parameters and FLOPs from the analytic cost model next to the paper's figures, a forward-pass "
        "timing on this runtime, and one rendered clip through a network. Weights are random here (nothing "
        "is downloaded); `mode=import` (`--config.mode=import --config.pretrained.source=x3d_s.pyth --config.pretrained.variant=x3d_s`) imports pytorchvideo or SlowFast checkpoints."),
    new_code_cell(INSTALL),
    new_code_cell(
        "from autox3d_jax.cost.analytic import arch_cost\n"
        "from autox3d_jax.models import zoo\n"
        "from IPython.display import Markdown, display\n\n"
        "# The X3D paper (train crop, 1 view): GFLOPs (multiply-adds) and parameters.\n"
        "PAPER = {'x3d_xs': (0.60, 3.8), 'x3d_s': (1.96, 3.8), 'x3d_m': (4.73, 3.8), 'x3d_l': (18.37, 6.2),\n"
        "         'x3d_xl': (35.84, 11.0)}\n"
        "rows = ['| network | clip | GFLOPs (ours) | GFLOPs (paper) | params M (ours) | params M (paper) |',\n"
        "        '|---|---|---|---|---|---|']\n"
        "for name in zoo.names():\n"
        "    spec, (paper_gflops, paper_params) = zoo.get(name, 400), PAPER[name]\n"
        "    cost = arch_cost(spec)\n"
        "    rows.append(f'| {spec.name} | {spec.num_frames}x{spec.crop_size}² | {cost.gflops:.2f} | {paper_gflops} | '\n"
        "                f'{cost.params / 1e6:.2f} | {paper_params} |')\n"
        "display(Markdown('\\n'.join(rows)))"),
    new_markdown_cell(
        "Forward-pass latency on this runtime, batch 1. To keep the notebook quick on a CPU runtime each "
        "network runs at a reduced clip (`CLIP`); `python -m autox3d_jax.main --config=configs/x3d.py:variant=S "
        "--workdir=/tmp/s --config.mode=summary` times a variant at its own size."),
    new_code_cell(
        "import os, time\n"
        "import jax, jax.numpy as jnp, numpy as np\n"
        "from autox3d_jax.models import builder\n\n"
        "CLIP = tuple(int(v) for v in os.environ.get('AUTOX3D_NOTEBOOK_CLIP', '4,64').split(','))   # frames, crop\n"
        "timings = {}\n"
        "for name in zoo.names():\n"
        "    spec = zoo.get(name, 10).replace(num_frames=CLIP[0], crop_size=CLIP[1])\n"
        "    model, variables = builder.build(spec), builder.init_variables(spec, jax.random.PRNGKey(0))\n"
        "    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))\n"
        "    x = jnp.zeros((1,) + spec.input_shape, jnp.float32)\n"
        "    forward(variables, x).block_until_ready()          # compile\n"
        "    times = []\n"
        "    for _ in range(5):\n"
        "        t0 = time.perf_counter(); forward(variables, x).block_until_ready(); times.append(time.perf_counter() - t0)\n"
        "    timings[spec.name] = 1e3 * float(np.median(times))\n"
        "    print(f'{spec.name:8s} {CLIP[0]}x{CLIP[1]}²: {timings[spec.name]:.1f} ms ({jax.default_backend()})')"),
    new_markdown_cell("One rendered clip of the embedded benchmark (moving digits) through X3D-XS at the clip above."),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "from autox3d_jax.data.pipeline import normalize\n"
        "from autox3d_jax.projects.moving_digits import digits\n\n"
        "clip_spec = digits.ClipSpec(task='motion', num_frames=CLIP[0], height=CLIP[1], width=CLIP[1])\n"
        "frames, label = digits.generate_clip(clip_spec, 'validation', 0)\n"
        "fig, axes = plt.subplots(1, len(frames), figsize=(2 * len(frames), 2))\n"
        "for ax, frame in zip(axes, frames):\n"
        "    ax.imshow(frame); ax.axis('off')\n"
        "fig.suptitle(f'label {label}: {digits.MOTION_CLASSES[label]}')\n"
        "plt.show()\n"
        "spec = zoo.get('x3d_xs', 10).replace(num_frames=CLIP[0], crop_size=CLIP[1])\n"
        "model, variables = builder.build(spec), builder.init_variables(spec, jax.random.PRNGKey(0))\n"
        "video = normalize(frames[None])                    # uint8 frames -> the pipeline's normalisation\n"
        "logits = model.apply(variables, video, train=False)\n"
        "print('input', video.shape, '-> logits', logits.shape, '(random weights: the scores mean nothing yet)')"),
])

for path, nb in (("colab/autox3d_quickstart.ipynb", quick), ("colab/x3d_model_zoo.ipynb", zoo_nb)):
  nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
  nb.metadata["colab"] = {"provenance": []}
  nbformat.validate(nb)
  nbformat.write(nb, path)
  print("wrote", path)
