"""``python -m melanoma.data.synthetic OUT [--scale S] [--seed N]``."""

from melanoma.data.synthetic.replicas import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
