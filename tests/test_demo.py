"""`dcgan demo`: its one-line errors before any server starts, the pictures it makes, and the page itself in
a headless Chromium (Debian's, driven by Playwright) that may reach nothing but the demo's own server."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

import dcgan
from conftest import train_tiny_runs
from dcgan import demo

pytestmark = pytest.mark.usefixtures("one_thread")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> dict[str, Path]:
    """A tiny conditional run and a tiny unconditional one (8x8 digits)."""
    return train_tiny_runs(tmp_path_factory.mktemp("demo"), mnist_subset, {"conditional": ("--conditional",),
                                                                           "plain": ()})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(*args: str) -> subprocess.CompletedProcess:
    """`dcgan demo ARGS` in a fresh interpreter that reports afterwards whether it imported gradio."""
    code = ("import sys; from dcgan.cli import main; code = main(sys.argv[1:]); "
            "print('gradio imported' if 'gradio' in sys.modules else 'gradio not imported'); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", code, "demo", *args], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_a_checkpoint_that_does_not_load_is_one_line_before_gradio_is_imported(tmp_path: Path) -> None:
    result = run_demo("--checkpoint", str(tmp_path / "missing"), "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr == f"dcgan: error: checkpoint not found: {tmp_path / 'missing'}\n"
    assert result.stdout == "gradio not imported\n"


@pytest.mark.slow
def test_a_port_in_use_is_one_line_naming_it_before_gradio_is_imported(runs: dict[str, Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_demo("--checkpoint", str(runs["plain"]), "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == f"dcgan: error: --port {port}: already in use on 127.0.0.1; choose another port\n"
    assert result.stdout == "gradio not imported\n"


@pytest.fixture
def gradio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gradio importable in this process, and the variables the demo sets for it restored afterwards."""
    pytest.importorskip("gradio", reason="the demo extra (pip install 'dcgan[demo]') is not installed")
    for name in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY", "GRADIO_TEMP_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("gradio_env")
@pytest.mark.slow
def test_the_class_picker_is_only_on_the_page_of_a_conditional_model(runs: dict[str, Path], tmp_path: Path) -> None:
    gr = demo.import_gradio(tmp_path / "cache")
    for run, visible in (("conditional", True), ("plain", False)):
        page = demo.build_page(gr, dcgan.load(runs[run]), tmp_path, name=run)
        picker = next(block for block in page.blocks.values() if getattr(block, "elem_id", None) == "label")
        assert picker.visible is visible and len(picker.choices) == 1 + 10 * visible
        assert picker.choices[0][0] == "any" and picker.value == "any"


@pytest.mark.usefixtures("gradio_env")
@pytest.mark.slow
def test_gradio_refusing_the_port_is_the_same_one_line(run_cli, runs: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "check_port", lambda host, port: None)  # as if the port was taken after the check
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_cli("demo", "--checkpoint", runs["plain"], "--port", port)
    assert code == 2 and out == ""
    assert err == f"dcgan: error: --port {port}: already in use on 127.0.0.1; choose another port\n"


def test_a_missing_extra_is_one_line_with_the_install_command(run_cli, runs: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` fails as if it were not installed
    code, out, err = run_cli("demo", "--checkpoint", runs["plain"], "--port", free_port())
    assert code == 2 and out == ""
    assert err == "dcgan: error: dcgan demo needs the demo extra: pip install 'dcgan[demo]'\n"


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_the_port_must_be_a_port_number(run_cli, port: str) -> None:
    code, _, err = run_cli("demo", "--checkpoint", "x", "--port", port)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--port" in err


def test_the_grid_is_the_seed_s_samples_a_column_per_class(runs: dict[str, Path], tmp_path: Path) -> None:
    g = dcgan.load(runs["conditional"])
    assert demo.describe(g) == "8x8 greyscale images, conditional on 10 classes, latent size 4"
    assert demo.describe(dcgan.load(runs["plain"])) == "8x8 greyscale images, unconditional, latent size 4"
    path = demo.grid_png(g, tmp_path, seed=3, num=20)
    assert path.name == "dcgan-seed3-20.png" and path.parent.parent == tmp_path
    scale = round(demo.SHOWN_SIZE / 8)
    picture = np.asarray(Image.open(path))[::scale, ::scale]  # back to one pixel per pixel
    assert picture.shape == (2 * 10 + 2, 10 * 10 + 2)
    samples = g.sample(20, seed=3)  # every class in turn: 0-9, 0-9
    assert np.array_equal(picture[2:10, 12:20], samples[1]) and np.array_equal(picture[12:20, 2:10], samples[10])
    sevens = demo.grid_png(g, tmp_path, seed=3, num=4, label=7)
    assert sevens.name == "dcgan-seed3-4-class7.png"
    assert np.array_equal(np.asarray(Image.open(sevens))[2 * scale:10 * scale:scale, 2 * scale:10 * scale:scale],
                          g.sample(4, seed=3, labels=7)[0])


def test_the_walk_goes_from_the_grid_s_first_row_to_seed_b_s_and_back(runs: dict[str, Path], tmp_path: Path) -> None:
    g = dcgan.load(runs["plain"])
    path = demo.walk_gif(g, tmp_path, seed=3, to_seed=5, num=9, frames=4)
    with Image.open(path) as gif:
        frames = [np.asarray(frame.convert("L"))[::2, ::2] for frame in ImageSequence.Iterator(gif)]
        assert gif.info["loop"] == 0
    assert len(frames) == 8 and frames[0].shape == (8 + 4, 3 * 10 + 2)  # 3 walks: the first row of a 3x3 grid
    start, middle = g.sample(9, seed=3), g.sample(9, seed=5)
    for walk in range(3):
        assert np.array_equal(frames[0][2:10, 2 + 10 * walk:10 + 10 * walk], start[walk])
        assert np.array_equal(frames[4][2:10, 2 + 10 * walk:10 + 10 * walk], middle[walk])


def test_the_grid_and_the_walk_are_drawn_at_the_truncation_chosen(runs: dict[str, Path], tmp_path: Path) -> None:
    g = dcgan.load(runs["plain"])
    path = demo.grid_png(g, tmp_path, seed=3, num=9, truncation=0.5)
    assert path.name == "dcgan-seed3-9-truncation0.5.png"
    scale = round(demo.SHOWN_SIZE / 8)
    picture = np.asarray(Image.open(path))[::scale, ::scale]
    truncated = g.sample(9, seed=3, truncation=0.5)
    assert np.array_equal(picture[2:10, 12:20], truncated[1])
    assert not np.array_equal(truncated, g.sample(9, seed=3))
    walk = demo.walk_gif(g, tmp_path, seed=3, to_seed=5, num=9, frames=2, truncation=0.5)
    assert walk.name == "dcgan-walk-seed3-seed5-truncation0.5.gif"
    with Image.open(walk) as gif:
        first = np.asarray(gif.convert("L"))[::2, ::2]
    for column in range(3):  # the walk starts at the first row of the truncated grid
        assert np.array_equal(first[2:10, 2 + 10 * column:10 + 10 * column], truncated[column])


@pytest.mark.usefixtures("gradio_env")
@pytest.mark.slow
def test_the_truncation_slider_starts_at_the_command_line_s_value(runs: dict[str, Path], tmp_path: Path) -> None:
    gr = demo.import_gradio(tmp_path / "cache")
    for start, lowest in ((1.0, demo.TRUNCATION_STEP), (0.7, demo.TRUNCATION_STEP), (0.005, 0.005)):
        page = demo.build_page(gr, dcgan.load(runs["plain"]), tmp_path, name="plain", truncation=start)
        slider = next(block for block in page.blocks.values() if getattr(block, "elem_id", None) == "truncation")
        assert (slider.value, slider.minimum, slider.maximum) == (start, lowest, 1.0)


@pytest.mark.parametrize(("value", "message"), [
    (1e9, "Images: must be a whole number from 1 to 100, got 1000000000.0"),
    (2.5, "Images: must be a whole number from 1 to 100, got 2.5"),
    (None, "Images: must be a whole number from 1 to 100, got None"),
    (float("nan"), "Images: must be a whole number from 1 to 100, got nan"),
    ("7", "Images: must be a whole number from 1 to 100, got '7'"),
])
def test_a_number_from_the_page_outside_its_control_s_range_is_refused(value, message: str) -> None:
    assert demo.whole(7.0, "Images", 1, demo.MAX_IMAGES) == 7
    with pytest.raises(dcgan.UserError) as refused:
        demo.whole(value, "Images", 1, demo.MAX_IMAGES)
    assert str(refused.value) == message


@pytest.fixture
def server(runs: dict[str, Path], tmp_path: Path) -> Iterator[str]:
    """`dcgan demo` of the tiny conditional run on a free port, as a subprocess; its URL once it answers."""
    pytest.importorskip("gradio", reason="the demo extra (pip install 'dcgan[demo]') is not installed")
    port = free_port()
    log = (tmp_path / "demo.log").open("w+")
    process = subprocess.Popen([sys.executable, "-m", "dcgan", "demo", "--checkpoint", str(runs["conditional"]),
                                "--port", str(port), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 45
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"dcgan demo exited with {process.returncode}: {log.read()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dcgan demo did not answer within 45 s"
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
def test_the_page_generates_downloads_and_interpolates_without_the_internet(server: str, runs: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the browser test needs it")
    g = dcgan.load(runs["conditional"])
    outside: list[str] = []
    local: list[str] = []

    def only_the_demo(route) -> None:
        url = route.request.url
        if url.startswith((server, "data:", "blob:")):
            local.append(url)
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.route("**/*", only_the_demo)
            page.goto(server)
            sync_api.expect(page.locator("#title")).to_contain_text("8x8 greyscale images, conditional on 10 classes")
            sync_api.expect(page).to_have_title("dcgan demo: conditional")
            sync_api.expect(page.locator("#label")).to_be_visible()  # waits: the title can render first

            def shown(selector: str, previous: str | None = None) -> tuple[str, bytes]:
                image = page.locator(f"{selector} img")
                image.wait_for(timeout=20_000)
                if previous is not None:
                    page.wait_for_function(f"document.querySelector('{selector} img').src !== {previous!r}",
                                           timeout=20_000)
                src = image.get_attribute("src")
                return src, page.request.get(src).body()

            page.locator("#seed input").fill("3")
            page.locator("#generate").click()
            first_src, first = shown("#grid")
            expected = Image.open(demo.grid_png(g, tmp_path, seed=3, num=20))
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(first))), np.asarray(expected))
            with page.expect_download() as download:
                page.locator("#download").click()
            assert download.value.suggested_filename == "dcgan-seed3-20.png"
            assert Path(download.value.path()).read_bytes() == first

            page.locator("#seed input").fill("4")
            page.locator("#generate").click()
            second_src, second = shown("#grid", previous=first_src)
            assert second != first
            expected = Image.open(demo.grid_png(g, tmp_path, seed=4, num=20))
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(second))), np.asarray(expected))

            page.locator("#label input").click()
            page.get_by_role("option", name="7", exact=True).click()
            page.locator("#generate").click()
            sevens_src, sevens = shown("#grid", previous=second_src)
            expected = Image.open(demo.grid_png(g, tmp_path, seed=4, num=20, label=7))
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(sevens))), np.asarray(expected))
            assert sevens_src.endswith("/dcgan-seed4-20-class7.png")

            page.locator("#truncation input[type=number]").fill("0.5")
            page.locator("#truncation input[type=number]").blur()
            page.locator("#generate").click()
            truncated_src, truncated = shown("#grid", previous=sevens_src)
            expected = Image.open(demo.grid_png(g, tmp_path, seed=4, num=20, label=7, truncation=0.5))
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(truncated))), np.asarray(expected))
            assert truncated_src.endswith("/dcgan-seed4-20-class7-truncation0.5.png")

            page.locator("#frames input[type=number]").fill("3")
            page.locator("#frames input[type=number]").blur()
            page.locator("#interpolate").click()
            _, walk = shown("#walk")
            with Image.open(io.BytesIO(walk)) as gif:
                assert gif.format == "GIF" and gif.n_frames == 6  # 3 frames to seed B, 3 back
                first = np.asarray(gif.convert("L"))
            with Image.open(demo.walk_gif(g, tmp_path, seed=4, to_seed=1, num=20, frames=3, label=7,
                                          truncation=0.5)) as gif:
                assert np.array_equal(first, np.asarray(gif.convert("L")))  # the walk at the slider's truncation
        finally:
            browser.close()
    assert outside == [], f"the page asked for something other than its server: {outside}"
    assert any(url.endswith(".gif") for url in local)  # the browser's own requests went through the check
