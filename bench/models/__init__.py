"""Models the benchmark studies use beside alphac's zoo (each file provides ``build_model()``)."""
