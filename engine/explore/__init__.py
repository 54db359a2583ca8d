"""Looking at data before training: facts (image facts), findings (duplicates, noise, leakage), analysis (the
whole report), flip_check (the mirror check), plots, report_page (the HTML page), augment_preview (--augment)
and label_cleaning (--write-clean --drop); `python -m engine.explore` is __main__."""
