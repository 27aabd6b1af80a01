"""A file-backed split's samples, read one at a time: a :class:`Samples` object holds only what locates each
sample (relative file names in a NumPy byte array, a memory-mapped Hugging Face table, a dataset object), and
:meth:`Samples.read` decodes one (images with Pillow, to uint8 tensors); :class:`UnreadableSample` names the
sample that cannot be read. The streaming loader (:mod:`lstsd.data.loaders.stream`) reads them in worker
processes (:mod:`lstsd.data.workers`)."""
from __future__ import annotations

import io
import os
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from lstsd.errors import one_line

class UnreadableSample(Exception):
    """A sample that cannot be read or decoded; ``where`` names it (a file, a table row, a dataset item)."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


# --------------------------------------------------------------------------- decoding
def to_uint8(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:
        return x
    from torchvision.transforms.v2 import functional as TF

    return TF.to_dtype(x, torch.uint8, scale=True)


JPEG = b"\xff\xd8\xff"


def pillow_problem(e: Exception) -> str:
    """Why Pillow could not read an image, in a few words."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "is not an image (Pillow cannot identify its format)"
    if isinstance(e, OSError) and e.strerror:
        return f"cannot be read ({e.strerror})"
    return f"is not a readable image ({type(e).__name__}: {one_line(e)})"


def decode(data, channels: Optional[int], where: str) -> Tensor:
    """An encoded image (a file path, or its bytes) as a uint8 ``C x H x W`` tensor; ``channels`` 3 (RGB), 1
    (grey) or None (as stored). JPEG files are decoded by torchvision's ``decode_image`` (libjpeg-turbo), every
    other format (PNG, BMP, GIF, TIFF, WebP, ...) by Pillow, as torchvision's ImageFolder does: torchvision's
    PNG decoder can crash the process on a damaged file, where Pillow raises an error. :class:`UnreadableSample`
    naming ``where`` if the image cannot be read or decoded."""
    try:
        if isinstance(data, str):
            with open(data, "rb") as f:
                data = f.read()
    except OSError as e:
        raise UnreadableSample(where, f"cannot be read ({e.strerror or e})") from None
    if bytes(data[:3]) == JPEG:
        from torchvision.io import ImageReadMode, decode_image

        mode = {3: ImageReadMode.RGB, 1: ImageReadMode.GRAY, None: ImageReadMode.UNCHANGED}[channels]
        try:
            return to_uint8(decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode))
        except RuntimeError:
            pass  # a JPEG libjpeg-turbo refuses (a rare colour space, damage): Pillow decides
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert({3: "RGB", 1: "L"}[channels]) if channels else image
            x = TF.pil_to_tensor(image)
    except Exception as e:  # noqa: BLE001 - Pillow's parsers raise many kinds on damaged files
        raise UnreadableSample(where, pillow_problem(e).replace("is not a readable image", "cannot be decoded")) \
            from None
    return to_uint8(x[None] if x.dim() == 2 else x)


def verify_header(data, where: str) -> None:
    """Pillow's cheap check of an encoded image: the header, and the chunks' checksums of a PNG; no pixels are
    decoded. :class:`UnreadableSample` if it fails."""
    from PIL import Image

    try:
        with Image.open(data if isinstance(data, str) else io.BytesIO(data)) as image:
            image.verify()
    except Exception as e:  # noqa: BLE001 - Pillow's parsers raise many kinds on damaged files
        raise UnreadableSample(where, pillow_problem(e)) from None


def as_tensor(x, where: str) -> Tensor:
    """A dataset object's input (a PIL image, a NumPy array, a tensor) as a tensor; images ``C x H x W``."""
    if isinstance(x, Tensor):
        return x
    try:
        from PIL import Image

        if isinstance(x, Image.Image):
            from torchvision.transforms.v2 import functional as TF

            return TF.pil_to_tensor(x)
        arr = np.asarray(x)
        if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):
            arr = arr.transpose(2, 0, 1)  # an H x W x C image
        elif arr.dtype == np.uint8 and arr.ndim == 2:
            arr = arr[None]  # a grey H x W image
        return torch.as_tensor(np.ascontiguousarray(arr))
    except Exception as e:  # noqa: BLE001 - an input of a type no tensor can be made of
        raise UnreadableSample(where, f"its input ({type(x).__name__}) is not an image, array or tensor "
                                      f"({type(e).__name__}: {one_line(e)})") from None


# --------------------------------------------------------------------------- samples
class Samples:
    """A split's inputs, read one at a time. Indexed by a tensor of positions (a validation split carved from
    it, :func:`lstsd.data.loaders.memory.carve_validation`) it gives a :class:`Subset`, read lazily as well."""

    encoded = False  # whether encoded_data(i) gives the encoded bytes or file of sample i (the header check)

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> Tensor:
        """Sample ``i``, decoded; :class:`UnreadableSample` naming it if it cannot be."""
        raise NotImplementedError

    def where(self, i: int) -> str:
        """Sample ``i``'s name in messages: its file, its row."""
        return f"sample {i}"

    def encoded_data(self, i: int):
        raise NotImplementedError

    def __getitem__(self, index) -> "Samples":
        return Subset(self, np.asarray(index.cpu() if isinstance(index, Tensor) else index, dtype=np.int64))


class Subset(Samples):
    def __init__(self, base: Samples, index: np.ndarray):
        if isinstance(base, Subset):
            base, index = base.base, base.index[index]
        self.base, self.index = base, index
        self.encoded = base.encoded

    def __len__(self) -> int:
        return len(self.index)

    def read(self, i: int) -> Tensor:
        return self.base.read(int(self.index[i]))

    def where(self, i: int) -> str:
        return self.base.where(int(self.index[i]))

    def encoded_data(self, i: int):
        return self.base.encoded_data(int(self.index[i]))


class ImageFiles(Samples):
    """Image files under ``folder``, by relative name (a NumPy byte-string array: shared by the forked
    workers without a copy, unlike a list of Python strings)."""

    encoded = True

    def __init__(self, folder: str, names: np.ndarray, channels: Optional[int] = 3):
        self.folder, self.names, self.channels = folder, names, channels

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> str:
        return os.path.join(self.folder, os.fsdecode(self.names[i]))

    def read(self, i: int) -> Tensor:
        path = self.path(i)
        return decode(path, self.channels, path)

    def where(self, i: int) -> str:
        return self.path(i)

    def encoded_data(self, i: int):
        return self.path(i)


class TableImages(Samples):
    """An image column of a Hugging Face ``datasets.Dataset`` (memory-mapped Arrow files): the encoded bytes of
    row ``i`` (or the file it names), decoded here."""

    encoded = True

    def __init__(self, table, column: str, channels: Optional[int], label: str):
        import datasets

        self.table = table.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        self.column, self.channels, self.label = column, channels, label

    def __len__(self) -> int:
        return len(self.table)

    def where(self, i: int) -> str:
        return f"{self.label}, row {i} (column {self.column})"

    def encoded_data(self, i: int):
        cell = self.table[int(i)][self.column]
        if cell is None or (cell.get("bytes") is None and not cell.get("path")):
            raise UnreadableSample(self.where(i), "holds no image")
        return cell["bytes"] if cell.get("bytes") is not None else cell["path"]

    def read(self, i: int) -> Tensor:
        return decode(self.encoded_data(i), self.channels, self.where(i))


class ObjectSamples(Samples):
    """The inputs of a dataset object (``dataset[i] -> (input, label)``, torchvision's interface)."""

    def __init__(self, dataset, label: str):
        self.dataset, self.label = dataset, label

    def __len__(self) -> int:
        return len(self.dataset)

    def where(self, i: int) -> str:
        return f"{self.label}[{i}]"

    def read(self, i: int) -> Tensor:
        try:
            item = self.dataset[int(i)]
        except Exception as e:  # noqa: BLE001 - whatever the dataset's own reading raises
            raise UnreadableSample(self.where(i), f"cannot be read ({type(e).__name__}: {one_line(e)})") from None
        return as_tensor(item[0], self.where(i))


class ArraySamples(Samples):
    """Rows of an array or tensor already in memory (the streaming loader on an in-memory dataset)."""

    def __init__(self, x):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def read(self, i: int) -> Tensor:
        return torch.as_tensor(self.x[int(i)])


def as_samples(x) -> Samples:
    return x if isinstance(x, Samples) else ArraySamples(x)
