"""Text tasks beside recommendation: preference prediction (TALLRec style) and item classification."""
