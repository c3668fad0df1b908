"""stepgrpo_fast.load_image: one loader, RGB out, EXIF upright, transparency onto white, the
modes converted right; size_problem: the processor's limits."""

import io

import numpy as np
import pytest
from PIL import Image

import stepgrpo_fast
from stepgrpo_fast.data.images import ImageDecodeError, image_size, load_image, size_problem


def _png(img) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_exported_at_top_level():
    assert stepgrpo_fast.load_image is load_image


def test_transparent_png_loads_onto_white(tmp_path):
    img = Image.new("RGBA", (30, 20), (255, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    img.putpixel((1, 0), (0, 0, 255, 128))
    path = tmp_path / "t.png"
    img.save(path)
    for src in (path, str(path), path.read_bytes(), Image.open(path),
                {"bytes": path.read_bytes(), "path": None}, {"bytes": None, "path": str(path)}):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (30, 20)
        assert out.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white, not black
        assert out.getpixel((0, 0)) == (255, 0, 0)
        assert out.getpixel((1, 0)) == (127, 127, 255)  # half blue over white


def test_palette_la_16bit_cmyk_and_grey():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    transparent = Image.open(io.BytesIO(_png(pal)))
    pal.info["transparency"] = 0
    see_through = Image.open(io.BytesIO(_png(pal)))
    assert load_image(transparent).getpixel((0, 0)) == (0, 0, 0)  # no transparency: black
    assert load_image(see_through).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(see_through).getpixel((1, 1)) == (255, 0, 0)
    assert load_image(Image.new("LA", (4, 4), (10, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("LA", (4, 4), (10, 255))).getpixel((0, 0)) == (10, 10, 10)
    deep = Image.open(io.BytesIO(_png(Image.fromarray(np.full((4, 4), 40000, np.uint16)))))
    assert deep.mode.startswith("I")
    assert load_image(deep).getpixel((0, 0)) == (156, 156, 156)  # 40000/257, not clipped to 255
    assert load_image(Image.new("CMYK", (4, 4), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)
    assert load_image(Image.new("L", (4, 4), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(Image.new("1", (4, 4), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif, quality=95)
    data = out.getvalue()
    assert image_size(data) == (20, 40)
    upright = load_image(data)
    assert upright.size == (20, 40)
    r, g, b = upright.getpixel((10, 2))  # the left strip is now on top
    assert r > 200 and b < 60
    png = io.BytesIO()
    img.save(png, format="PNG", exif=exif)  # eXIf before the pixels: read from the header
    assert image_size(png.getvalue()) == (20, 40) and load_image(png.getvalue()).size == (20, 40)


def test_truncated_and_unreadable_fail_with_the_source_named(tmp_path):
    img = Image.effect_noise((120, 120), 60).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert image_size(path) == (120, 120)  # the header alone looks fine
    with pytest.raises(ImageDecodeError, match=r"cannot decode image '.*cut.jpg' \(image file is truncated"):
        load_image(path)
    with pytest.raises(ImageDecodeError, match="not found"):
        load_image(tmp_path / "none.png")
    with pytest.raises(ImageDecodeError, match=r"cannot decode image <5 bytes>"):
        load_image(b"hello")


def test_size_problem_names_the_processor_limits():
    assert size_problem(56, 56) is None
    assert "aspect ratio 300 > 200" in size_problem(6000, 20)
    assert size_problem(20 * 200, 20) is None
    assert "side under 14 px" in size_problem(100, 10)
    assert "over max_pixels 50000" in size_problem(4000, 21, max_pixels=50_000)
    assert "empty" in size_problem(0, 5)
