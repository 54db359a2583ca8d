"""Tables: which images, which labels, which fold.

- read: the training CSV or class folders, the test CSV, any CSV with required columns, class-list differences
- audit: every row training cannot use and why (missing, damaged, unreadable, bad target), and the policy
- folds: stratified, seeded folds or one validation split; near-duplicate groups kept on one side
- near_duplicates: perceptual hashes and groups of near-duplicate images
- pseudo_labels: confident test predictions added as training rows, audited like the rest
- demo_digits: the scikit-learn digits written as the demo data set
"""
