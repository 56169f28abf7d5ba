"""Review states, the review queue, several readers per case: agreement and consensus."""
