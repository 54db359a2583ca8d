"""Looking at data before training: facts (image facts), findings (duplicates, noise, leakage), analysis (the
whole report), flip_check (the mirror check), plots, page (the HTML page), augment_preview (--augment),
label_cleaning (--write-clean --drop) and command (`python -m engine.explore`'s body)."""
