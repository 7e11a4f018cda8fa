"""One parser per release layout (ISIC, derm7pt, PH2, PAD-UFES-20, MED-NODE, Kaggle)."""
