"""`dcgan demo`: a page in the browser for a trained generator (Gradio, the `demo` extra).

Samples of a seed (of one class, for a conditional model, and at a truncation: noise drawn closer
to the latent's centre) as a grid to look at and download, and a looping walk from that seed's
noise to another seed's and back. The page is served on this machine only by default and asks
nothing of the internet: no telemetry, no update check, no fonts or scripts from elsewhere.
"""

from __future__ import annotations

import errno
import importlib.util
import math
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

from .api import TrainedGenerator, load
from .errors import UserError
from .images import grid_image
from .interpolation import save_walk, walk_between_seeds
from .sampling import check_truncation, truncated

MISSING_EXTRA = "dcgan demo needs the demo extra: pip install 'dcgan[demo]'"
ANY = "any"  # the class picker's choice for every class in turn
MAX_IMAGES = 100
MIN_FRAMES, MAX_FRAMES = 2, 48  # frames each way of a walk
MAX_SEED = 2**53 - 1  # the largest whole number a browser's number field holds exactly
SHOWN_SIZE = 96  # pixels: small images are enlarged (nearest neighbour) to about this size on the page
FPS = 12.0
TRUNCATION_STEP = 0.01  # the truncation slider's step, and its lowest value unless --truncation names a lower one
FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Helvetica", "Arial", "sans-serif"]
FONTS_MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]
CSS = "#grid img, #walk img { image-rendering: pixelated; }"


def describe(trained: TrainedGenerator) -> str:
    """What the model draws, in one line: size, colours, classes, noise."""
    colours = "greyscale" if trained.channels == 1 else f"{trained.channels}-channel"
    if trained.num_classes is not None:
        labels = f"conditional on {trained.num_classes} classes"
    elif trained.generator.takes_labels:  # labels it draws itself, never asked for: its k-means clusters
        labels = f"trained on {trained.generator.num_classes} k-means clusters (drawn by their sizes)"
    else:
        labels = "unconditional"
    return f"{trained.image_size}x{trained.image_size} {colours} images, {labels}, latent size {trained.latent_dim}"


def check_port(host: str, port: int) -> None:
    """Refuse a `host:port` that this process cannot listen on (in use, or an address not of this machine)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise UserError(f"--host {host}: not an address or a host name this machine knows") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server sets it: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserError(_port_message(host, port, exc)) from None


def _port_message(host: str, port: int, exc: OSError) -> str:
    """One line for a failed bind; Gradio's own error has no errno, only a sentence about the port."""
    if exc.errno == errno.EADDRINUSE or (exc.errno is None and "port" in str(exc)):
        return f"--port {port}: already in use on {host}; choose another port"
    return f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})"


def columns_for(trained: TrainedGenerator, num: int, label: int | None) -> int:
    """Grid columns: a column per class when a conditional model draws every class in turn, else square."""
    if trained.num_classes is not None and label is None:
        return min(trained.num_classes, num)
    return math.ceil(math.sqrt(num))


def file_name(stem: str, label: int | None, truncation: float, suffix: str) -> str:
    """A download's name: `stem`, then the class and the truncation where they were chosen."""
    chosen = ("" if label is None else f"-class{label}") + ("" if truncation == 1 else f"-truncation{truncation:g}")
    return stem + chosen + suffix


def grid_png(trained: TrainedGenerator, folder: Path, *, seed: int, num: int, label: int | None = None,
             truncation: float = 1.0) -> Path:
    """`num` samples of `seed` (of class `label`, or every class in turn, at `truncation`) as an enlarged PNG
    grid in `folder`."""
    images = trained.sample(num, seed=seed, labels=label, truncation=truncation)
    if images.ndim == 3:
        images = images[..., None]
    picture = grid_image(images, columns=columns_for(trained, num, label))
    scale = max(1, round(SHOWN_SIZE / trained.image_size))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    out = _new_file(folder, file_name(f"dcgan-seed{seed}-{num}", label, truncation, ".png"))
    picture.save(out)
    return out


def walk_gif(trained: TrainedGenerator, folder: Path, *, seed: int, to_seed: int, num: int, frames: int,
             label: int | None = None, truncation: float = 1.0) -> Path:
    """A looping GIF: the first row of `grid_png`'s grid for `seed` walks to that of `to_seed` and back, in
    `frames` steps each way (spherical interpolation of the noise, labels and truncation fixed)."""
    pictures = walk_between_seeds(truncated(trained.generator, truncation), seed=seed, to_seed=to_seed, num=num,
                                  walks=columns_for(trained, num, label), frames_per_segment=frames,
                                  device=trained.device, label=label)
    out = _new_file(folder, file_name(f"dcgan-walk-seed{seed}-seed{to_seed}", label, truncation, ".gif"))
    save_walk(pictures, out, fps=FPS)
    return out


def whole(value: Any, what: str, low: int, high: int) -> int:
    """A number from the page as an int from `low` to `high`; a UserError naming its control otherwise (a
    request need not come from the page's own controls)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
            or value != int(value):
        raise UserError(f"{what}: must be a whole number from {low} to {high}, got {value!r}")
    return int(value)


def _new_file(folder: Path, name: str) -> Path:
    """`name` in a new subfolder of `folder`: every request its own file, under a name worth downloading."""
    return Path(tempfile.mkdtemp(dir=folder)) / name


def require_gradio() -> None:
    """Refuse to go on, in one line, when the demo extra is not installed."""
    if importlib.util.find_spec("gradio") is None:
        raise UserError(MISSING_EXTRA)


def import_gradio(cache: Path) -> Any:
    """Gradio, imported with its telemetry and update check off and its file cache under `cache`."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("GRADIO_TEMP_DIR", str(cache))  # read when gradio is imported
    try:
        import gradio
    except ImportError:
        raise UserError(MISSING_EXTRA) from None
    return gradio


def build_page(gr: Any, trained: TrainedGenerator, folder: Path, *, name: str, truncation: float = 1.0) -> Any:
    """The page's Blocks: controls (the truncation slider starting at `truncation`), the grid and its download,
    the walk between two seeds."""
    conditional = trained.num_classes is not None
    classes = [ANY] + [str(c) for c in range(trained.num_classes or 0)]
    default_num = 2 * trained.num_classes if conditional and 2 * trained.num_classes <= MAX_IMAGES else 16

    def chosen(label: str | None) -> int | None:
        if not label:  # a cleared picker: every class in turn, as `any`
            return None
        if label not in classes:
            named = f" or a class from 0 to {trained.num_classes - 1}" if conditional else ""
            raise UserError(f"Class: must be {ANY}{named}, got {label!r}")
        return None if label == ANY else int(label)

    def on_generate(seed: float | None, num: float | None, label: str | None,
                    psi: float | None) -> tuple[str, Any]:
        try:
            path = grid_png(trained, folder, seed=whole(seed, "Seed", 0, MAX_SEED),
                            num=whole(num, "Images", 1, MAX_IMAGES), label=chosen(label),
                            truncation=check_truncation(psi, option="Truncation"))
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        return str(path), gr.DownloadButton(value=str(path), interactive=True)

    def on_walk(seed: float | None, to_seed: float | None, num: float | None, label: str | None,
                psi: float | None, frames: float | None) -> str:
        try:
            return str(walk_gif(trained, folder, seed=whole(seed, "Seed", 0, MAX_SEED),
                                to_seed=whole(to_seed, "Seed B", 0, MAX_SEED), num=whole(num, "Images", 1, MAX_IMAGES),
                                frames=whole(frames, "Frames each way", MIN_FRAMES, MAX_FRAMES), label=chosen(label),
                                truncation=check_truncation(psi, option="Truncation")))
        except UserError as exc:
            raise gr.Error(str(exc)) from None

    with gr.Blocks(title=f"dcgan demo: {name}", analytics_enabled=False) as page:
        gr.Markdown(f"# dcgan demo: {name}\n{describe(trained)}", elem_id="title")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED, elem_id="seed")
                num = gr.Slider(1, MAX_IMAGES, value=default_num, step=1, label="Images", elem_id="num")
                label = gr.Dropdown(classes, value=ANY, label="Class", visible=conditional, elem_id="label",
                                    info="any: every class in turn, a column each")
                psi = gr.Slider(min(TRUNCATION_STEP, truncation), 1.0, value=truncation, step=TRUNCATION_STEP,
                                label="Truncation", elem_id="truncation",
                                info="1: none; lower: noise nearer the latent's centre, less variety, more fidelity")
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                download = gr.DownloadButton("Download PNG", interactive=False, elem_id="download")
            with gr.Column(scale=3):
                grid = gr.Image(label="Samples", show_label=False, type="filepath", format="png",
                                interactive=False, buttons=["fullscreen"], elem_id="grid")
        gr.Markdown("## Interpolation\nThe first row of the grid walks through latent space to the same row of "
                    "seed B and back: spherical interpolation of the noise, the classes and the truncation fixed, "
                    f"{FPS:g} frames/s.")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                to_seed = gr.Number(1, label="Seed B", precision=0, minimum=0, maximum=MAX_SEED, elem_id="to_seed")
                frames = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=12, step=1, label="Frames each way",
                                   elem_id="frames")
                interpolate = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
            with gr.Column(scale=3):
                walk = gr.Image(label="Walk", show_label=False, type="filepath", format="gif", interactive=False,
                                buttons=["download", "fullscreen"], elem_id="walk")
        generate.click(on_generate, [seed, num, label, psi], [grid, download], api_name="generate")
        interpolate.click(on_walk, [seed, to_seed, num, label, psi, frames], walk, api_name="interpolate")
    return page


def serve(checkpoint: str | Path, *, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          truncation: float = 1.0) -> None:
    """Serve the page of `checkpoint`'s generator at http://host:port until interrupted (Ctrl+C or SIGTERM),
    its truncation slider starting at `truncation`.

    Every check that can fail (the extra, the checkpoint, the port) runs before the server starts.
    """
    require_gradio()
    trained = load(checkpoint, device=device)
    check_port(host, port)
    path = Path(checkpoint)
    name = path.name if path.is_dir() else f"{path.parent.parent.name}/{path.name}"
    with tempfile.TemporaryDirectory(prefix="dcgan-demo-") as temporary:
        folder = Path(temporary)
        (folder / "outputs").mkdir()
        gr = import_gradio(folder / "cache")
        page = build_page(gr, trained, folder / "outputs", name=name, truncation=truncation)
        theme = gr.themes.Default(font=FONTS, font_mono=FONTS_MONO)  # system fonts: nothing fetched
        try:
            page.launch(server_name=host, server_port=port, share=False, quiet=True, prevent_thread_lock=True,
                        inbrowser=False, theme=theme, css=CSS, ssr_mode=False, mcp_server=False, pwa=False,
                        enable_monitoring=False, allowed_paths=[str(folder)])
        except OSError as exc:  # taken between the check and the launch
            raise UserError(_port_message(host, port, exc)) from None
        print(f"dcgan demo: {name} at http://{host}:{port} (Ctrl+C to stop)", flush=True)
        try:
            _wait_for_interrupt()
        finally:
            page.close()


def _wait_for_interrupt() -> None:
    """Sleep until Ctrl+C or SIGTERM (which would otherwise skip the clean-up of the temporary files)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = signal.signal(signal.SIGTERM, interrupt) if main else None
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
