"""The µ-XRF forward model: sample x beam x ring current x spectra x counting (pure numpy).

:class:`XRFForwardModel` precomputes, once, every component map of the sample convolved with
the beam on the sample's fine grid; a measurement at stage positions then only interpolates
those maps (bilinear), scales by the incident photons of the time window (ring current) and
draws Poisson counts per detector element. Fly-scan bins average the maps along the distance
travelled during the bin (motion blur). Nothing here keeps global state: randomness comes from
the ``rng`` passed in, time from the caller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from asirp.xrf.lines import ChannelROI
from sim.beam import Beam, blur_maps
from sim.ring import RingCurrent
from sim.samples import Hotspot, Sample
from sim.spectra import SpectralModel


@dataclass
class Measurement:
    """Counts of ``n`` points (or fly bins).

    Attributes
    ----------
    roi_counts : numpy.ndarray
        ``(n, n_detectors, n_rois)`` int64 counts in each ROI of each detector element.
    spectra : numpy.ndarray or None
        ``(n, n_detectors, n_channels)`` uint32 counts, when spectra were asked for.
    live_time_s, real_time_s : numpy.ndarray
        ``(n, n_detectors)`` s.
    dead_time : numpy.ndarray
        ``(n,)`` dead-time fraction, mean over the detector elements.
    i0 : numpy.ndarray
        ``(n,)`` incident-flux monitor counts (float64).
    ring_current_ma : numpy.ndarray
        ``(n,)`` mean ring current over each window, mA.
    photons : numpy.ndarray
        ``(n,)`` expected incident photons (noise free), for checks.
    """

    roi_counts: np.ndarray
    spectra: np.ndarray | None
    live_time_s: np.ndarray
    real_time_s: np.ndarray
    dead_time: np.ndarray
    i0: np.ndarray
    ring_current_ma: np.ndarray
    photons: np.ndarray

    @property
    def roi_totals(self) -> np.ndarray:
        """ROI counts summed over the detector elements ``(n, n_rois)``."""
        return self.roi_counts.sum(axis=1)


class XRFForwardModel:
    """Expected and measured XRF counts at stage positions and times.

    Parameters
    ----------
    sample : Sample
        The sample (its grid is the stage frame, centred on 0).
    beam : Beam
        Beam profile.
    ring : RingCurrent
        Ring current (flux is proportional to it).
    spectral : SpectralModel
        Templates for the sample's elements; its components must be the sample's elements
        followed by ``"matrix"`` and ``"air"``.
    flux_ph_s : float
        Photons per second on the sample at ``reference_current_ma``.
    reference_current_ma : float, optional
        Current at which ``flux_ph_s`` is quoted (default: the ring's top current).
    i0_efficiency : float
        Fraction of the incident photons absorbed in the I0 ion chamber (sets its noise).
    i0_gain : float
        Monitor counts per absorbed photon (voltage-to-frequency conversion).
    """

    def __init__(
        self,
        sample: Sample,
        beam: Beam,
        ring: RingCurrent,
        spectral: SpectralModel,
        *,
        flux_ph_s: float,
        reference_current_ma: float | None = None,
        i0_efficiency: float = 0.05,
        i0_gain: float = 0.02,
    ) -> None:
        if spectral.elements != sample.elements:
            raise ValueError(
                f"spectral model elements {spectral.elements} differ from the sample's "
                f"{sample.elements}"
            )
        if not (isinstance(flux_ph_s, int | float) and math.isfinite(flux_ph_s) and flux_ph_s > 0):
            raise ValueError(f"flux_ph_s must be a finite number > 0, got {flux_ph_s!r}")
        if not 0 < i0_efficiency <= 1 or not i0_gain > 0:
            raise ValueError("i0_efficiency must be in (0, 1] and i0_gain > 0")
        self.sample = sample
        self.beam = beam
        self.ring = ring
        self.spectral = spectral
        self.detector = spectral.detector
        self.flux_ph_s = float(flux_ph_s)
        self.reference_current_ma = float(reference_current_ma or ring.top_current_ma)
        self.i0_efficiency = float(i0_efficiency)
        self.i0_gain = float(i0_gain)
        maps = [sample.maps[e] for e in sample.elements]
        maps.append(sample.matrix if sample.matrix is not None else np.zeros(sample.shape))
        self._maps = np.stack(maps).astype(np.float64)
        self._blurred = blur_maps(self._maps, beam.kernel(sample.pixel_um))
        self.rois: tuple[ChannelROI, ...] = tuple(
            self.detector.roi(e) for e in (*sample.elements, "Ar")
        )
        self.roi_names: tuple[str, ...] = (*sample.elements, "Ar")
        self._roi_matrix = spectral.roi_matrix(self.rois)

    # -- maps ---------------------------------------------------------------------------------
    def _coordinates(self, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        ny, nx = self.sample.shape
        p = self.sample.pixel_um
        rows = np.asarray(y_um, dtype=np.float64) / p + (ny - 1) / 2.0
        cols = np.asarray(x_um, dtype=np.float64) / p + (nx - 1) / 2.0
        return np.stack([rows.ravel(), cols.ravel()])

    def amounts_at(
        self, y_um: np.ndarray | float, x_um: np.ndarray | float, *, blurred: bool = True
    ) -> np.ndarray:
        """Component amounts under the beam at stage positions.

        Parameters
        ----------
        y_um, x_um : float or numpy.ndarray
            Positions, µm (broadcast together, any shape ``S``).
        blurred : bool
            Beam-weighted amounts (what is measured) or the bare sample at the point.

        Returns
        -------
        numpy.ndarray
            ``S + (n_components,)`` µg/cm² (elements, matrix) and 1 for air; 0 outside the
            sample field.
        """
        y, x = np.broadcast_arrays(np.asarray(y_um, dtype=float), np.asarray(x_um, dtype=float))
        coords = self._coordinates(y, x)
        source = self._blurred if blurred else self._maps
        values = np.stack(
            [map_coordinates(m, coords, order=1, mode="constant", cval=0.0) for m in source],
            axis=-1,
        )
        air = np.ones((*values.shape[:-1], 1))
        return np.concatenate([np.clip(values, 0.0, None), air], axis=-1).reshape(
            (*y.shape, self.spectral.n_components)
        )

    def amounts_along(
        self,
        y_um: np.ndarray,
        x_start_um: np.ndarray,
        x_stop_um: np.ndarray,
        *,
        substeps: int = 5,
    ) -> np.ndarray:
        """Beam-weighted amounts averaged over horizontal segments (fly-scan bins).

        Parameters
        ----------
        y_um, x_start_um, x_stop_um : numpy.ndarray
            ``(n,)`` segment row and ends, µm.
        substeps : int
            Sample points per segment (midpoint rule).

        Returns
        -------
        numpy.ndarray
            ``(n, n_components)``.
        """
        fractions = (np.arange(substeps) + 0.5) / substeps
        x0, x1 = np.asarray(x_start_um, float), np.asarray(x_stop_um, float)
        xs = x0[:, None] + (x1 - x0)[:, None] * fractions[None, :]
        ys = np.broadcast_to(np.asarray(y_um, float)[:, None], xs.shape)
        return self.amounts_at(ys, xs).mean(axis=1)

    # -- counting -----------------------------------------------------------------------------
    def photons(self, t0_s: np.ndarray, dwell_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Incident photons and mean ring current of time windows ``[t0, t0 + dwell]``."""
        current = np.asarray(self.ring.mean_current_ma(t0_s, dwell_s))
        return self.flux_ph_s * current / self.reference_current_ma * dwell_s, current

    def measure(
        self,
        amounts: np.ndarray,
        t0_s: np.ndarray | float,
        dwell_s: np.ndarray | float,
        rng: np.random.Generator,
        *,
        spectra: bool = False,
    ) -> Measurement:
        """Count ``n`` points: Poisson per detector element, with dead time and I0.

        Parameters
        ----------
        amounts : numpy.ndarray
            ``(n, n_components)`` from :meth:`amounts_at` or :meth:`amounts_along`.
        t0_s, dwell_s : float or numpy.ndarray
            Start and length of each counting window, s (broadcast to ``(n,)``).
        rng : numpy.random.Generator
            Random generator.
        spectra : bool
            Also draw full spectra (ROI counts are then sums of their channels).

        Returns
        -------
        Measurement
        """
        amounts = np.atleast_2d(np.asarray(amounts, dtype=np.float64))
        n = amounts.shape[0]
        t0 = np.broadcast_to(np.asarray(t0_s, dtype=np.float64), (n,))
        dwell = np.broadcast_to(np.asarray(dwell_s, dtype=np.float64), (n,))
        if np.any(dwell <= 0):
            raise ValueError("dwell_s must be > 0 s")
        photons, current = self.photons(t0, dwell)
        weights = self.detector.weights  # (D,)
        # Input count rate per element and its live fraction (non-paralysable dead time).
        icr = (
            (photons / dwell)[:, None]
            * weights[None, :]
            * (amounts @ self.spectral.totals)[:, None]
        )
        live = 1.0 / (1.0 + icr * self.detector.dead_time_s)
        scale = photons[:, None] * weights[None, :] * live  # (n, D)
        if spectra:
            expected = scale[:, :, None] * (amounts @ self.spectral.templates)[:, None, :]
            drawn = rng.poisson(expected).astype(np.uint32)
            roi_counts = np.stack(
                [drawn[:, :, roi.slice].sum(axis=2, dtype=np.int64) for roi in self.rois], axis=2
            )
        else:
            drawn = None
            expected_roi = scale[:, :, None] * (amounts @ self._roi_matrix)[:, None, :]
            roi_counts = rng.poisson(expected_roi).astype(np.int64)
        i0 = self.i0_gain * rng.poisson(self.i0_efficiency * photons).astype(np.float64)
        return Measurement(
            roi_counts=roi_counts,
            spectra=drawn,
            live_time_s=dwell[:, None] * live,
            real_time_s=np.repeat(dwell[:, None], weights.size, axis=1),
            dead_time=(1.0 - live).mean(axis=1),
            i0=i0,
            ring_current_ma=current,
            photons=photons,
        )

    def expected_roi_counts(
        self,
        y_um: np.ndarray | float,
        x_um: np.ndarray | float,
        *,
        dwell_s: float,
        blurred: bool = True,
        current_ma: float | None = None,
    ) -> np.ndarray:
        """Noise-free ROI counts (all detector elements, no dead time) at positions.

        Parameters
        ----------
        y_um, x_um : float or numpy.ndarray
            Positions, µm (shape ``S``).
        dwell_s : float
            Counting time, s.
        blurred : bool
            Through the beam (what a scan measures) or of the bare sample (the restoration
            target).
        current_ma : float, optional
            Ring current (default the reference current).

        Returns
        -------
        numpy.ndarray
            ``S + (n_rois,)`` expected counts, in the order of :attr:`roi_names`.
        """
        current = self.reference_current_ma if current_ma is None else float(current_ma)
        photons = self.flux_ph_s * current / self.reference_current_ma * float(dwell_s)
        return photons * (self.amounts_at(y_um, x_um, blurred=blurred) @ self._roi_matrix)


class GroundTruth:
    """What the simulation knows and a real beamline does not.

    Parameters
    ----------
    model : XRFForwardModel
        The forward model.
    """

    def __init__(self, model: XRFForwardModel) -> None:
        self._model = model

    @property
    def sample(self) -> Sample:
        """The sample (fine-grid maps in µg/cm²)."""
        return self._model.sample

    @property
    def maps(self) -> dict[str, np.ndarray]:
        """Element -> fine-grid areal density ``(ny, nx)``, µg/cm²."""
        return dict(self._model.sample.maps)

    @property
    def blurred_maps(self) -> dict[str, np.ndarray]:
        """Element -> fine-grid areal density convolved with the beam ``(ny, nx)``, µg/cm²."""
        elements = self._model.sample.elements
        return {e: self._model._blurred[k] for k, e in enumerate(elements)}

    @property
    def hotspots(self) -> tuple[Hotspot, ...]:
        """Ground-truth hotspots (seed sample)."""
        return self._model.sample.hotspots

    @property
    def beam(self) -> Beam:
        """The beam profile."""
        return self._model.beam

    def psf(self, pixel_um: float | Sequence[float]) -> np.ndarray:
        """Beam PSF sampled at a scan step (µm, or (rows, columns)), float32, sum 1."""
        return self._model.beam.kernel(pixel_um).astype(np.float32)

    def concentration(
        self,
        element: str,
        y_um: np.ndarray | float,
        x_um: np.ndarray | float,
        *,
        blurred: bool = False,
    ) -> np.ndarray:
        """Areal density of an element at positions (µg/cm²), bare or through the beam."""
        elements = self._model.sample.elements
        if element not in elements:
            raise ValueError(f"unknown element {element!r}; the sample holds {elements}")
        amounts = self._model.amounts_at(y_um, x_um, blurred=blurred)
        return amounts[..., elements.index(element)]

    def expected_counts(
        self,
        roi: str,
        y_um: np.ndarray | float,
        x_um: np.ndarray | float,
        *,
        dwell_s: float,
        blurred: bool = True,
        current_ma: float | None = None,
    ) -> np.ndarray:
        """Noise-free counts of one ROI (element symbol or ``"Ar"``) at positions.

        See :meth:`XRFForwardModel.expected_roi_counts`; counts include the scatter and the
        other lines that fall in the ROI, summed over the detector elements.
        """
        names = self._model.roi_names
        if roi not in names:
            raise ValueError(f"unknown ROI {roi!r}; use one of {names}")
        counts = self._model.expected_roi_counts(
            y_um, x_um, dwell_s=dwell_s, blurred=blurred, current_ma=current_ma
        )
        return counts[..., names.index(roi)]
