"""Looking at data before training: image facts, findings (duplicates, noise, leakage), plots, the HTML page and the augmentation preview."""
