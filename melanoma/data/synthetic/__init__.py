"""SYNTHETIC miniature replicas of the eleven skin-lesion dataset releases.

**Everything written by this module is SYNTHETIC data.** The images are procedurally drawn
lesions, the ids, patients and clinical metadata are invented. The replicas exist so that the
whole pipeline (ingest, dedup, splits, training, calibration, rejection, reports) can run and be
tested end to end without the real data, which a user must download by hand.

What *is* faithful is the **layout** of every release (see ``shared/spec/datasets.md``): folder
names, file names and extensions, CSV/XLSX columns, header quirks and label encodings, so that
the same parsers read a replica and a real download. For example::

    out/isic2016/ISBI2016_ISIC_Part3_Training_Data/ISIC_0000000.jpg
    out/isic2016/ISBI2016_ISIC_Part3_Training_GroundTruth.csv     (no header; benign/malignant)
    out/mednode/complete_mednode_dataset/melanoma/1076054.jpg
    out/ph2/PH2 Dataset images/IMD003/IMD003_Dermoscopic_Image/IMD003.bmp
    out/ph2/PH2_dataset.xlsx                                       (12 legend rows, header row 12)

Cross-dataset duplicates are planted as in reality (ISIC 2016 test inside ISIC 2017 training,
ISIC 2018 training inside ISIC 2019 and identical to HAM10000, ISIC images resized and renamed in
the Kaggle set, a MED-NODE image inside PAD-UFES-20, ISIC 2020's own duplicate pairs).

Next to each replica, and never read by a parser, the generator writes the ground truth:

* ``out/<short>/SYNTHETIC.json``: generator, seed, scale and counts per split;
* ``out/<short>/SYNTHETIC_truth.csv``: ``image_id,label,split,path`` for every image;
* ``out/PLANTED_DUPLICATES.csv``: ``kind,dataset_a,image_id_a,dataset_b,image_id_b`` for every
  pair of files (in different places) that show the same picture (closure over the planted
  copies); ``kind`` is ``id`` (same ISIC id, identical pixels), ``pixels`` (another name,
  identical pixels) or ``resized`` (resized and re-encoded: only a perceptual hash finds it);
* ``out/isic2020/ISIC_2020_Test_GroundTruth_SYNTHETIC.csv``: the held-out labels of the ISIC 2020
  test images (not part of the real release), for scoring a SIIM-ISIC style submission.

Images separate the classes imperfectly: melanomas are larger, more asymmetric, with irregular
borders and several colours (dark brown, black, blue-grey, red, white); benign lesions are
rounder, smaller and uniformly brown; ~15 % of the lesions look ambiguous and ~5 % carry the
other class's look (label noise). Each release has its own look (skin tone, colour cast,
illumination, vignetting and black dermoscope corners, hair, size, JPEG quality); clinical sets
(MED-NODE, PAD-UFES-20, the derm7pt ``clinic`` images) show a small lesion on wider skin.

Output is deterministic: one seed gives identical bytes on every run (every random draw comes
from a :class:`numpy.random.Generator` keyed by seed, dataset and item; XLSX zip timestamps are
pinned).

The sub-package is layered, each module importing only those listed before it:
:mod:`~melanoma.data.synthetic.plan` (releases, counts per class and split, random streams, planted
duplicates), :mod:`~melanoma.data.synthetic.draw` (a lesion and a photograph of it in a release's
look), :mod:`~melanoma.data.synthetic.writer` (the state of one call, CSV and image writing),
:mod:`~melanoma.data.synthetic.layouts_isic` and :mod:`~melanoma.data.synthetic.layouts_other`
(each release's official layout), :mod:`~melanoma.data.synthetic.replicas` (:func:`write_replicas`
and ``python -m melanoma.data.synthetic``).

>>> summary = write_replicas("work/synthetic", scale=0.3, seed=0)   # doctest: +SKIP
>>> summary["counts"]["isic2016"]["test"]                           # doctest: +SKIP
{'n': 12, 'melanoma': 3}
"""

from melanoma.data.synthetic.plan import BASE_COUNTS, GENERATOR, requested_counts
from melanoma.data.synthetic.replicas import write_replicas

__all__ = ["BASE_COUNTS", "GENERATOR", "requested_counts", "write_replicas"]
