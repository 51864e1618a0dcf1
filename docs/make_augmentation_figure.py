"""Draw docs/augmentation.png: a few voc5-mini images through the SSD training augmentation.

    python docs/make_augmentation_figure.py [path/to/voc5-mini] [--out docs/augmentation.png]

Each row is one image: the original with its boxes, then several augmented draws
(photometric distortion, zoom out, IoU-constrained crop, flip, resize to 300) with
the boxes that came out of them. Draw k of row r uses the Generator seeded by (r, k).
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minissd.datasets.augment import train_transform  # noqa: E402
from minissd.datasets.voc import VOCDataset  # noqa: E402
from minissd.viz import show_augmented  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VOC5_CLASSES = ("bus", "car", "cat", "person", "train")
IMAGE_IDS = ("000058", "000147", "000040")     # several objects and classes each
SIZE = 300


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=REPO.parent / "shared" / "data" / "voc5-mini")
    parser.add_argument("--out", default=REPO / "docs" / "augmentation.png")
    parser.add_argument("--draws", type=int, default=4)
    args = parser.parse_args()

    ds = VOCDataset([(args.root, "trainval")], class_names=VOC5_CLASSES)
    transform = train_transform(SIZE)
    fig, axes = plt.subplots(len(IMAGE_IDS), args.draws + 1, figsize=(2.6 * (args.draws + 1),
                                                                      2.7 * len(IMAGE_IDS)))
    for r, (row, image_id) in enumerate(zip(axes, IMAGE_IDS)):
        image, boxes, labels = ds.load(ds.ids.index(image_id))
        show_augmented(image, boxes, labels, transform, seeds=[[r, k] for k in range(args.draws)],
                       class_names=ds.class_names, axes=row)
        row[0].set_title(f"{image_id} original", fontsize=10)
        for k, ax in enumerate(row[1:]):
            ax.set_title(f"draw {k}", fontsize=10)
    fig.suptitle("SSD training augmentation: photometric, zoom out, IoU crop, flip, resize to 300")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
