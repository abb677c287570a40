"""Result frames, Pareto fronts and reports (filled in by the analysis issue)."""
