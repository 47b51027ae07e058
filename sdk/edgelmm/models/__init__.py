"""Model assembly on transformers classes (torch side). Registry names resolve here; export and train use it."""
