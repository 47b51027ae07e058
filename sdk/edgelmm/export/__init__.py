"""[export] ONNX graphs, validation against torch, atomic bundle writer. Needs `pip install 'edgelmm[export]'`."""
