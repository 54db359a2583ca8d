"""Every run under a folder as one table (`python -m engine.runs`): status (each run folder's state), table
(rows, columns, sorting), page (an HTML page with every validation curve) and command (the table, and the
recipe differences of two runs)."""
