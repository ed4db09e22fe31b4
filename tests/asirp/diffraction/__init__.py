"""Tests of the powder-diffraction time series (integration, profile, restoration, detection)."""
