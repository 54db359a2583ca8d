"""Every run under a folder as one table (`python -m engine.runs`, entry __main__): status (each run folder's
state), table (rows, columns, sorting), html_page (an HTML page with every validation curve) and command (the
table, and the recipe differences of two runs). The run folder itself is engine/run_folder.py."""
