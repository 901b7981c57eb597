"""What a person sees: run progress and summary, the `doit status` table, the HTML report."""
