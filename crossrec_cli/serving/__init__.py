"""From a trained run to a live recommender: ONNX export (``export``) and an HTTP JSON server over
the exported graphs (``engine``, ``server``)."""
