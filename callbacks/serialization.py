"""Bluesky documents on the wire as data, never code: msgpack with numpy arrays.

bluesky's 0MQ classes (:class:`bluesky.callbacks.zmq.Publisher`, ``bluesky-0MQ-proxy``,
:class:`bluesky.callbacks.zmq.RemoteDispatcher`) default to :mod:`pickle`; unpickling a message
runs whatever code its sender chose, so any process that can publish to the proxy could run
code in every subscriber. ASIRP's subscribers (``asirp live``, the Tango device's live mode)
read msgpack instead, through :func:`deserializer`, unless pickle is explicitly allowed.

The RunEngine side publishes with the matching :func:`serializer`::

    from bluesky.callbacks.zmq import Publisher
    from callbacks.serialization import serializer

    RE.subscribe(Publisher("127.0.0.1:5577", serializer=serializer))

The standard ``bluesky-0MQ-proxy`` forwards the bytes unchanged, so it needs no change.

Wire format
    ``msgpack`` (strings as UTF-8 ``str``, bytes as ``bin``). A numpy array is a map
    ``{b"nd": True, b"type": dtype.str, b"kind": b"", b"shape": [...], b"data": <bytes>}``
    (the format of ``msgpack_numpy.encode``, so publishers that use the ``msgpack`` +
    ``msgpack_numpy`` recipe of bluesky's documentation are read too); numpy scalars are sent
    as plain numbers, tuples as lists. Only arrays of plain numeric dtypes (bool, integers,
    floats, complex; no object, structured or void dtype) are decoded, with
    :func:`numpy.frombuffer` after checking that shape and size agree: ``msgpack_numpy.decode``
    itself unpickles object arrays, so it is not used.
Refusals
    :func:`deserializer` raises :class:`DocumentDecodeError` for anything else (bad msgpack,
    not a mapping, an array it does not decode); :data:`DOCUMENT_NAMES` are the document names
    a subscriber accepts (see :class:`callbacks.remote.SafeRemoteDispatcher`, which logs and
    drops refused messages and keeps going).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

DOCUMENT_NAMES = frozenset(
    {
        "start",
        "descriptor",
        "event",
        "event_page",
        "datum",
        "datum_page",
        "resource",
        "stop",
        "stream_resource",
        "stream_datum",
    }
)
"""Names of the event-model documents a subscriber passes on; other names are dropped."""

NUMERIC_KINDS = frozenset("biufc")
"""numpy dtype kinds that :func:`deserializer` decodes: bool, int, uint, float, complex."""

MAX_ARRAY_DIMENSIONS = 32
_DTYPE_TEXT = re.compile(r"[<>|=][biufc][0-9]{1,2}")


class DocumentDecodeError(ValueError):
    """A 0MQ message is not a document this module decodes (it is dropped, never executed)."""


def _encode(obj: Any) -> Any:
    """Encode what msgpack cannot (its ``default`` hook): numpy arrays and scalars, complex."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in NUMERIC_KINDS and not obj.dtype.hasobject:
            return {
                b"nd": True,
                b"type": obj.dtype.str,
                b"kind": b"",
                b"shape": list(obj.shape),
                b"data": obj.tobytes(),
            }
        return obj.tolist()  # strings, objects: as lists of plain values (or refused below)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, complex):
        return {b"complex": True, b"data": repr(obj)}
    raise TypeError(
        f"cannot send a {type(obj).__name__} in a bluesky document with msgpack: {obj!r}"
    )


def serializer(doc: Mapping[str, Any]) -> bytes:
    """Encode one document for :class:`bluesky.callbacks.zmq.Publisher` (``serializer=``).

    Parameters
    ----------
    doc : mapping
        A bluesky document (its name travels separately in the 0MQ message).

    Returns
    -------
    bytes
        The msgpack encoding (numpy arrays included, see the module's wire format).

    Raises
    ------
    TypeError
        For a value msgpack cannot carry (not a number, string, bytes, list, mapping, numpy
        array or scalar).
    """
    return msgpack.packb(doc, default=_encode, use_bin_type=True)


def _decode_array(obj: Mapping[Any, Any]) -> Any:
    descr = obj.get(b"type")
    if isinstance(descr, bytes):
        descr = descr.decode("ascii", "replace")
    if obj.get(b"kind", b"") not in (b"", "") or not isinstance(descr, str):
        raise DocumentDecodeError(
            f"refused an array of dtype {descr!r}, kind {obj.get(b'kind')!r}: only plain "
            "numeric arrays (bool, int, uint, float, complex) are decoded"
        )
    if not _DTYPE_TEXT.fullmatch(descr):
        raise DocumentDecodeError(
            f"refused an array of dtype {descr!r}: only plain numeric arrays are decoded"
        )
    dtype = np.dtype(descr)
    if dtype.kind not in NUMERIC_KINDS or dtype.hasobject:
        raise DocumentDecodeError(f"refused an array of dtype {descr!r}")
    data = obj.get(b"data")
    if not isinstance(data, bytes):
        raise DocumentDecodeError("an encoded array has no bytes")
    if obj.get(b"nd") is False:  # a numpy scalar (msgpack_numpy's encoding)
        if len(data) != dtype.itemsize:
            raise DocumentDecodeError(f"a {descr} scalar needs {dtype.itemsize} bytes")
        return np.frombuffer(data, dtype=dtype)[0].item()
    shape = obj.get(b"shape")
    if (
        not isinstance(shape, list | tuple)
        or len(shape) > MAX_ARRAY_DIMENSIONS
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise DocumentDecodeError(f"an encoded array has a bad shape {shape!r}")
    if math.prod(shape) * dtype.itemsize != len(data):
        raise DocumentDecodeError(
            f"an encoded array of shape {list(shape)} and dtype {descr} does not hold "
            f"{len(data)} bytes"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _object_hook(obj: dict[Any, Any]) -> Any:
    if b"nd" in obj:
        return _decode_array(obj)
    if obj.get(b"complex") is True and isinstance(obj.get(b"data"), bytes | str):
        text = obj[b"data"]
        try:
            return complex(text.decode("ascii") if isinstance(text, bytes) else text)
        except (UnicodeDecodeError, ValueError):
            raise DocumentDecodeError(f"a bad complex number {text!r}") from None
    return obj


def deserializer(data: bytes) -> dict[str, Any]:
    """Decode one document for :class:`bluesky.callbacks.zmq.RemoteDispatcher` (``deserializer=``).

    Never executes code: msgpack only builds numbers, strings, bytes, lists and maps, and
    arrays are decoded as in the module's wire format.

    Parameters
    ----------
    data : bytes
        The document part of a 0MQ message.

    Returns
    -------
    dict
        The document.

    Raises
    ------
    DocumentDecodeError
        If ``data`` is not msgpack, not a mapping with string keys, or holds an array this
        module does not decode (object, structured dtypes; sizes that do not agree).
    """
    try:
        doc = msgpack.unpackb(data, raw=False, object_hook=_object_hook, strict_map_key=True)
    except DocumentDecodeError:
        raise
    except Exception as error:  # msgpack's own errors (ExtraData, FormatError, ValueError, ...)
        raise DocumentDecodeError(
            f"not a msgpack document ({type(error).__name__}: {' '.join(str(error).split())})"
        ) from None
    if not isinstance(doc, dict) or not all(isinstance(key, str) for key in doc):
        raise DocumentDecodeError(
            f"a document must be a mapping with string keys, got a {type(doc).__name__}"
        )
    return doc
