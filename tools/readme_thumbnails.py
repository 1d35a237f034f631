"""Small copies of a profile's figures for the README's figure table (docs/img/<name>.png).

    python tools/readme_thumbnails.py [--profile smoke] [--width 480]

Run after `make reproduce` when a figure changed; the README shows them at about 200 px, and 480 px keeps
them sharp on high-density screens. Palette PNGs keep the lot near 0.5 MB.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--width", type=int, default=480)
    args = ap.parse_args()
    src = ROOT / "figures" / args.profile
    manifest = json.loads((src / "manifest.json").read_text())
    out = ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(manifest["figures"]) if isinstance(manifest.get("figures"), dict) else sorted(
        p.name for p in src.glob("*.png"))
    total = 0
    for name in names:
        name = name if name.endswith(".png") else f"{name}.png"
        img = Image.open(src / name).convert("RGB")
        h = round(img.height * args.width / img.width)
        small = img.resize((args.width, h), Image.LANCZOS).quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        small.save(out / name, optimize=True)
        total += (out / name).stat().st_size
        print(f"{out / name}  {args.width}x{h}")
    print(f"{len(names)} thumbnails, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
