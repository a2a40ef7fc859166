"""``caenet data check [DATASET ...]``: read datasets in full and report counts, or what is
wrong and how to fix it."""

from __future__ import annotations

from suite.config import ConfigError
from suite.data import INFO, check

ORDER = 70
HELP = 'dataset utilities: check that datasets are on disk and readable'


def add_parser(sub) -> None:
    data = sub.add_parser("data", help=HELP)
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    chk = data_sub.add_parser("check", help="read datasets in full and report counts, or what is wrong and how to fix it",
                              description="Looks under --root, else $CAENET_DATA, else the offline copies beside the checkout. "
                              "Named datasets must all be readable (exit 1 otherwise); with none named, every known "
                              "dataset is reported and a missing one is not an error. "
                              "Example: caenet data check mnist cifar10")
    chk.add_argument("datasets", nargs="*", metavar="DATASET", help=f"{', '.join(INFO)} (default: all)")
    chk.add_argument("--root", help="data folder holding the standard layouts")
    chk.add_argument("--download", action="store_true", help="download missing datasets with torchvision")
    chk.set_defaults(func=main)


def main(args) -> int:
    unknown = [n for n in args.datasets if n not in INFO]
    if unknown:
        raise ConfigError(f"unknown dataset {unknown[0]!r}; known: {', '.join(INFO)}")
    failed = 0
    for name in args.datasets or list(INFO):
        try:
            s = check(name, args.root, download=args.download)
        except Exception as exc:  # DataError, or a reader's failure: reported per dataset, the others still run
            failed += 1
            print(f"{'FAIL' if args.datasets else 'n/a '} {name}: {exc}")
            continue
        tr, te = s["train"], s["test"]
        print(f"ok   {name}: {tr['images']} train / {te['images']} test images of shape {tr['shape']} "
              f"({tr['per_class_min']}-{tr['per_class_max']} per class) in {s['path']}")
    return 1 if failed and args.datasets else 0  # only the datasets asked for must be there
