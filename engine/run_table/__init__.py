"""Every run under a folder as one table (`python -m engine.runs`): status, scores, time and what each run
changed; an HTML page with every validation curve; the recipe differences of two runs."""
