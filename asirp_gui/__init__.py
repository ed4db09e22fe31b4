"""The operator panel, ``asirp gui``: a Qt desktop application over the device and the engine."""
