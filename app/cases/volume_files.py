"""Checks on the raw bytes of a NIfTI, NRRD or MetaImage upload, before any image reader sees them.

SimpleITK follows an NRRD ``data file:`` field and a MetaImage ``ElementDataFile`` to other files
(absolute paths, relative paths, ``LIST``), so an upload could make the server read, store and echo any
file it can open. ITK also fills a payload that ends early with zeros, and turns a zero NIfTI spacing
into 1 mm. Only a single, self-contained file whose payload is complete is accepted: every refusal
here is made from the header and the byte count alone, so no voxel value ever reaches an error message.
"""

from __future__ import annotations

import bz2
import gzip
import io
import math
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import nibabel as nib
import numpy as np

from app.core.config import get_settings
from app.core.errors import InvalidUpload, UploadTooLarge

CHUNK = 1 << 20
HEADER_LIMIT = 1 << 16  # NRRD / MetaImage headers are text of a few hundred bytes
# A compressed payload may inflate to this multiple of the upload limit (a 1 GiB CT compresses about 3x);
# past it the stream is a compression bomb, refused before it is inflated any further.
INFLATE_FACTOR = 8

_END_OF_LINE = re.compile(rb"\r\n|\r|\n")
_DATA_FILE_NRRD = re.compile(r"(?i)^\s*data\s*file\s*:")
_ONCE = ("data file", "elementdatafile")

NRRD_TYPE_SIZES: dict[str, int] = {}
for _size, _names in (
    (1, "signed char|int8|int8_t|uchar|unsigned char|uint8|uint8_t"),
    (2, "short|short int|signed short|signed short int|int16|int16_t|ushort|unsigned short|"
        "unsigned short int|uint16|uint16_t"),
    (4, "int|signed int|int32|int32_t|uint|unsigned int|uint32|uint32_t|float"),
    (8, "longlong|long long|long long int|signed long long|signed long long int|int64|int64_t|ulonglong|"
        "unsigned long long|unsigned long long int|uint64|uint64_t|double"),
):
    NRRD_TYPE_SIZES.update(dict.fromkeys(_names.split("|"), _size))

MET_TYPE_SIZES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


def check_volume_bytes(name: str, suffix: str, data: bytes) -> None:
    """Refuse a volume file that points at other files, ends early or declares an impossible spacing.

    Args:
        name: the client's file name, for messages.
        suffix: one of ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``.
        data: the whole uploaded file.
    """
    if suffix in (".nii", ".nii.gz"):
        _check_nifti(name, data)
    elif suffix == ".nrrd":
        _check_nrrd(name, data)
    elif suffix == ".mha":
        _check_metaimage(name, data)


def _invalid(name: str, why: str) -> InvalidUpload:
    return InvalidUpload(f"{name!r} {why}", field="file")


def _truncated(name: str, declared: int, held: int) -> InvalidUpload:
    return _invalid(name, f"is truncated: its header declares {declared} bytes of image data, the file holds {held}")


# --- NIfTI ---------------------------------------------------------------------------------------


def _check_nifti(name: str, data: bytes) -> None:
    chunks = _stream(name, _gunzip_chunks(data)) if data[:2] == b"\x1f\x8b" else iter([data])
    first = next(chunks, b"")
    header = _nifti_header(name, first[:544])
    offset, declared, dtype = _nifti_payload(name, header)
    # ITK's NIfTI reader turns NaN voxels into zeros, so they are looked for here, in the raw payload.
    scan = _NonFiniteScan(dtype, offset, declared) if dtype.kind == "f" else None
    total = 0
    for chunk in _chain(first, chunks):
        if scan is not None and scan.feed(chunk, total):
            raise _invalid(name, "holds NaN or infinite voxel values")
        total += len(chunk)
    if total < declared:
        raise _truncated(name, declared, total)
    _require_spacing(name, [float(v) for v in header["pixdim"][1: min(int(header["dim"][0]), 3) + 1]])


def _nifti_payload(name: str, header: nib.Nifti1Header) -> tuple[int, int, np.dtype[Any]]:
    """The data offset, the byte length the header declares (offset included) and the voxel type."""
    if header["magic"].item() in (b"ni1", b"ni2"):
        raise _invalid(name, "is the header of a .hdr/.img pair; send a single-file .nii or .nii.gz")
    ndim = int(header["dim"][0])
    if not 1 <= ndim <= 7:
        raise _invalid(name, f"declares {ndim} dimensions; not a valid NIfTI header")
    shape = [int(v) for v in header["dim"][1: ndim + 1]]
    if any(v < 1 for v in shape):
        raise _invalid(name, f"declares the image size {shape}; every dimension must be at least 1")
    try:
        dtype = header.get_data_dtype()
    except Exception as exc:  # an unknown datatype code
        raise _invalid(name, "declares an unknown NIfTI voxel type") from exc
    offset = float(header["vox_offset"])  # nibabel's get_data_offset() raises on NaN
    if not math.isfinite(offset) or offset < 0:
        raise _invalid(name, f"declares the data offset {offset}; not a valid NIfTI header")
    return int(offset), int(offset) + math.prod(shape) * dtype.itemsize, dtype


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


class _NonFiniteScan:
    """Finds NaN/Inf in a float payload that arrives in chunks of any length."""

    def __init__(self, dtype: np.dtype[Any], start: int, end: int) -> None:
        self.dtype, self.start, self.end = dtype, start, end
        self.carry = b""

    def feed(self, chunk: bytes, position: int) -> bool:
        lo = max(self.start - position, 0)
        hi = min(self.end - position, len(chunk))
        if hi <= lo:
            return False
        data = self.carry + chunk[lo:hi]
        whole = len(data) - len(data) % self.dtype.itemsize
        self.carry = data[whole:]
        return not bool(np.isfinite(np.frombuffer(data[:whole], dtype=self.dtype)).all())


def _nifti_header(name: str, head: bytes) -> nib.Nifti1Header:
    if len(head) < 348:
        raise _invalid(name, "is too short to hold a NIfTI header: the file is corrupt or truncated")
    sizeof_hdr = {struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]}
    header_class = nib.Nifti2Header if 540 in sizeof_hdr else nib.Nifti1Header
    try:
        return header_class.from_fileobj(io.BytesIO(head), check=False)  # check=True "fixes" a zero spacing to 1
    except Exception as exc:  # nibabel raises HeaderDataError, ValueError, struct errors
        raise _invalid(name, "does not start with a valid NIfTI header") from exc


# --- NRRD ----------------------------------------------------------------------------------------


def _check_nrrd(name: str, data: bytes) -> None:
    if not data.startswith(b"NRRD"):
        raise _invalid(name, "does not start with the NRRD magic line")
    fields, payload_start = _text_header(name, data, _nrrd_field)
    if "data file" in fields or "datafile" in fields:
        raise _invalid(name, "names a separate data file ('data file:' field); only an NRRD with its data "
                       "attached is accepted")
    kind = fields.get("type", "")
    if kind not in NRRD_TYPE_SIZES:
        raise _invalid(name, f"has the NRRD type {kind!r}, which is not a supported scalar type")
    sizes = _ints(name, fields.get("sizes", ""), "sizes")
    count = math.prod(sizes)
    payload = data[payload_start:]
    encoding = fields.get("encoding", "raw")
    skip = _whole(name, fields.get("byte skip", "0"), "byte skip")
    if encoding == "raw":
        held = len(payload) - max(skip, 0)
    elif encoding in ("gzip", "gz"):
        held = sum(len(c) for c in _stream(name, _gunzip_chunks(payload))) - max(skip, 0)
    elif encoding in ("bzip2", "bz2"):
        held = sum(len(c) for c in _stream(name, _bunzip_chunks(payload))) - max(skip, 0)
    elif encoding in ("ascii", "text", "txt"):
        held = len(payload.split()) * NRRD_TYPE_SIZES[kind]  # one token per value
    elif encoding == "hex":
        held = len(re.sub(rb"\s", b"", payload)) // 2
    else:
        raise _invalid(name, f"uses the NRRD encoding {encoding!r}, which is not supported")
    declared = count * NRRD_TYPE_SIZES[kind]
    if held < declared:
        raise _truncated(name, declared, max(held, 0))
    _require_nrrd_spacing(name, fields)


def _nrrd_field(line: str) -> tuple[str, str] | None:
    # teem tries "key: value" before "key:=value", so a line is a field whenever it has ": ".
    if line.startswith(("#", "NRRD")) or ": " not in line:
        if _DATA_FILE_NRRD.match(line):
            return "data file", line  # any spelling teem might take for a data file, e.g. "data file:LIST"
        return None
    key, value = line.split(": ", 1)
    if _DATA_FILE_NRRD.match(line):
        return "data file", value
    return key.strip().lower(), value.strip()


def _require_nrrd_spacing(name: str, fields: dict[str, str]) -> None:
    if "spacings" in fields:
        values = [v for v in fields["spacings"].split() if v.lower() != "nan"]
        _require_spacing(name, [_float(name, v) for v in values])
    if "space directions" in fields:
        vectors = re.findall(r"\(([^)]*)\)", fields["space directions"])
        norms = [math.sqrt(sum(_float(name, c) ** 2 for c in v.split(","))) for v in vectors]
        _require_spacing(name, norms)


# --- MetaImage -----------------------------------------------------------------------------------


def _check_metaimage(name: str, data: bytes) -> None:
    fields, payload_start = _text_header(name, data, _meta_field, last_key="elementdatafile")
    data_file = fields.get("elementdatafile")
    if data_file is None:
        raise _invalid(name, "has no ElementDataFile line: not a MetaImage (.mha) header")
    if data_file.upper() != "LOCAL":
        raise _invalid(name, "names a separate data file (ElementDataFile); only a .mha with its data attached "
                       "(ElementDataFile = LOCAL) is accepted")
    kind = fields.get("elementtype", "").upper()
    if kind not in MET_TYPE_SIZES:
        raise _invalid(name, f"has the element type {kind or 'none'!r}, which is not a supported scalar type")
    dims = _ints(name, fields.get("dimsize", ""), "DimSize")
    channels = _whole(name, fields.get("elementnumberofchannels", "1"), "ElementNumberOfChannels")
    declared = math.prod(dims) * channels * MET_TYPE_SIZES[kind]
    payload = data[payload_start:]
    compressed = fields.get("compresseddata", "false").lower() == "true"
    held = sum(len(c) for c in _stream(name, _inflate_chunks(payload))) if compressed else len(payload)
    if held < declared:
        raise _truncated(name, declared, held)
    spacing = fields.get("elementspacing") or fields.get("elementsize")
    if spacing:
        _require_spacing(name, [_float(name, v) for v in spacing.split()])


def _meta_field(line: str) -> tuple[str, str] | None:
    # MetaIO ends a key at "=" or ":", whichever comes first.
    parts = re.split(r"[=:]", line, maxsplit=1)
    if len(parts) < 2:
        return None
    return parts[0].strip().lower(), parts[1].strip()


# --- shared --------------------------------------------------------------------------------------


def _text_header(
    name: str, data: bytes, parse: Callable[[str], tuple[str, str] | None], last_key: str | None = None
) -> tuple[dict[str, str], int]:
    """Parse header lines up to a blank line (NRRD) or up to the ``last_key`` line (MetaImage).

    Returns the fields and the offset at which the payload starts.
    """
    fields: dict[str, str] = {}
    offset = 0
    while offset < min(len(data), HEADER_LIMIT):
        end = _END_OF_LINE.search(data, offset)  # \r\n, \n or a lone \r, as teem and MetaIO split lines
        if end is None:
            break
        line = data[offset: end.start()].decode("latin-1")
        offset = end.end()
        if not line and last_key is None:
            return fields, offset
        field = parse(line)
        if field is not None:
            if field[0] in fields and field[0] in _ONCE:
                raise _invalid(name, f"names its data file more than once ({field[0]!r})")
            fields[field[0]] = field[1]
            if field[0] == last_key:
                return fields, offset
    raise _invalid(name, "has no complete header: the file is corrupt or truncated")


def _ints(name: str, text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise _invalid(name, f"declares the {what} {text!r}; every dimension must be a whole number of at least 1")
    return values


def _whole(name: str, text: str, what: str) -> int:
    try:
        return int(text or 0)
    except ValueError as exc:
        raise _invalid(name, f"declares the {what} {text!r}, which is not a whole number") from exc


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise _invalid(name, f"has the spacing value {text!r}, which is not a number") from exc


def _require_spacing(name: str, spacing: Iterable[float]) -> None:
    values = list(spacing)
    if any(not math.isfinite(v) or v <= 0 for v in values):
        shown = ", ".join(f"{v:g}" for v in values)
        raise _invalid(name, f"has the voxel spacing [{shown}]; every spacing must be a positive, finite number")


def _stream(name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decompressed chunks; a stream that ends early or is corrupt is refused as truncated."""
    limit = get_settings().max_upload_bytes * INFLATE_FACTOR
    total = 0
    try:
        for chunk in chunks:
            total += len(chunk)
            if total > limit:
                raise UploadTooLarge(f"{name!r} inflates to more than {limit / 2**20:.0f} MiB "
                                     f"({INFLATE_FACTOR} x NEXTCASE_MAX_UPLOAD_MB)", field="file")
            yield chunk
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        raise _invalid(name, "has a compressed stream that ends early or is corrupt: the file is truncated") from exc


def _gunzip_chunks(data: bytes) -> Iterator[bytes]:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def _bunzip_chunks(data: bytes) -> Iterator[bytes]:
    with bz2.BZ2File(io.BytesIO(data)) as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def _inflate_chunks(data: bytes) -> Iterator[bytes]:
    inflater = zlib.decompressobj()
    for start in range(0, len(data), CHUNK):
        yield inflater.decompress(data[start: start + CHUNK], CHUNK * 64)
        while inflater.unconsumed_tail:
            yield inflater.decompress(inflater.unconsumed_tail, CHUNK * 64)
    yield inflater.flush()
    if not inflater.eof:
        raise EOFError("zlib stream ended early")
