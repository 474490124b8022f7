"""The parameters and buffers of a TorchScript archive, read as data: no TorchScript code is run.

`torch.jit.load` executes the archive's code (a scripted `__setstate__` runs on load and may write files);
OpenAI's CLIP weights ship as such archives. This reader opens the zip itself and unpickles `data.pkl` with an
unpickler (`pickle.Unpickler` with its `find_class` restricted) that resolves only these names:

* `__torch__.*` classes (the archive's modules): inert records that keep their pickled attributes;
* `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` / `_rebuild_parameter` and the `torch.jit._pickle`
  list helpers: functions that only record their arguments;
* `torch.<Type>Storage`: markers of a dtype; storages come from the archive's `data/<key>` entries;
* `collections.OrderedDict`.

Any other name ends the read with an error. Every object a name resolves to belongs to this one read and
refuses to be modified by the pickle. Which attributes of a module are parameters and buffers is read from
the `__parameters__` / `__buffers__` lines of the archive's `code/` files (parsed as literals, never run), so
the result has the keys and values of `torch.jit.load(path).state_dict()`.
"""
from __future__ import annotations

import ast
import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from utils.errors import UserError

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _Inert:
    """Base of what the unpickler hands out: attributes cannot be set or rebuilt by the pickle."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise pickle.UnpicklingError("the archive tried to modify an object")

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("the archive tried to rebuild an object")


class _Function(_Inert):
    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]):
        object.__setattr__(self, "function", function)

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


class _StorageType(_Inert):
    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype):
        object.__setattr__(self, "dtype", dtype)


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: torch.dtype
    numel: int

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("the archive tried to rebuild a storage")


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: Any
    size: tuple
    stride: tuple

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("the archive tried to rebuild a tensor")


class _FrozenClass(type):
    """Metaclass of the record classes: the pickle cannot set class attributes."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise pickle.UnpicklingError("the archive tried to modify a class")


class _Record(metaclass=_FrozenClass):
    """An object of a TorchScript class, as data: `state` is what the pickle's BUILD gave it."""

    qualified_name = ""
    state: Any = None

    def __init__(self, *args: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise pickle.UnpicklingError("a tensor in the archive is not a storage view")
    return _TensorRef(storage, offset, size, stride)


def _first(value: Any, *_ignored: Any) -> Any:
    return value


_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_tensor"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _first,
    ("torch.jit._pickle", "build_intlist"): _first,
    ("torch.jit._pickle", "build_doublelist"): _first,
    ("torch.jit._pickle", "build_boollist"): _first,
    ("torch.jit._pickle", "build_tensorlist"): _first,
    ("torch.jit._pickle", "restore_type_tag"): _first,
}


class _DataUnpickler(pickle.Unpickler):
    """Resolves only the names listed in the module docstring, to objects private to this read."""

    def __init__(self, data: bytes, storage_keys: set[str]):
        super().__init__(io.BytesIO(data))
        self.storage_keys = storage_keys
        self.names: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.names:
            self.names[(module, name)] = self._resolve(module, name)
        return self.names[(module, name)]

    @staticmethod
    def _resolve(module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _FrozenClass(name, (_Record,), {"qualified_name": f"{module}.{name}", "__slots__": ()})
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if (module, name) in _FUNCTIONS:
            return _Function(_FUNCTIONS[(module, name)])
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"refused name {module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("unexpected persistent id")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or type(numel) is not int or numel < 0 or key not in self.storage_keys:
            raise pickle.UnpicklingError(f"bad storage reference {key!r}")
        return _StorageRef(key, kind.dtype, numel)


def _class_body(source: str, name: str) -> tuple[str, list[str]] | None:
    """(base class, indented body lines) of `class name(...)` in a TorchScript code file."""
    lines = source.splitlines()
    head = f"class {name}("
    for i, line in enumerate(lines):
        if line.startswith(head) and line.endswith("):"):
            body = []
            for following in lines[i + 1:]:
                if following and not following[0].isspace():
                    break
                body.append(following)
            return line[len(head):-2], body
    return None


class _Archive:
    """One open TorchScript zip: its pickled module tree and the storages it refers to."""

    def __init__(self, zip_file: zipfile.ZipFile, path: Path):
        self.zip, self.path = zip_file, path
        self.prefix = self._prefix()
        self.members: dict[str, tuple[list[str], list[str] | None] | None] = {}
        self.storages: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def _prefix(self) -> str:
        names = set(self.zip.namelist())
        for top in sorted({name.split("/", 1)[0] for name in names if "/" in name}):
            if f"{top}/data.pkl" in names and f"{top}/constants.pkl" in names:
                return top
        raise UserError(f"{self.path} is not a TorchScript archive (no data.pkl / constants.pkl)")

    def error(self, what: str) -> UserError:
        return UserError(f"{self.path}: {what}")

    def root(self) -> _Record:
        byteorder = f"{self.prefix}/byteorder"
        if byteorder in self.zip.NameToInfo and self.zip.read(byteorder).strip() != b"little":
            raise self.error("big-endian TorchScript archives are not supported")
        data = f"{self.prefix}/data/"
        keys = {name[len(data):] for name in self.zip.namelist() if name.startswith(data)}
        try:
            root = _DataUnpickler(self.zip.read(f"{self.prefix}/data.pkl"), keys).load()
        except Exception as exc:  # the pickle machine raises many types for malformed input
            raise self.error(f"the TorchScript archive holds more than module data ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); it is not read, because loading it would run its code") from None
        if not isinstance(root, _Record) or self.module_members(root.qualified_name) is None:
            raise self.error("the TorchScript archive does not hold a module")
        return root

    def module_members(self, qualified: str) -> tuple[list[str], list[str] | None] | None:
        """(parameter names, buffer names or None when not recorded) of a module class; None for another class."""
        if qualified not in self.members:
            module, _, name = qualified.rpartition(".")
            try:
                source = self.zip.read(f"{self.prefix}/code/{module.replace('.', '/')}.py").decode("utf-8")
            except (KeyError, UnicodeDecodeError):
                raise self.error(f"the TorchScript archive has no readable code for class {qualified}") from None
            found = _class_body(source, name)
            if found is None:
                raise self.error(f"the TorchScript archive has no definition of class {qualified}")
            base, body = found
            self.members[qualified] = (self._names(body, "__parameters__") or [],
                                       self._names(body, "__buffers__")) if base == "Module" else None
        return self.members[qualified]

    def _names(self, body: list[str], attribute: str) -> list[str] | None:
        for line in body:
            if line.startswith(f"  {attribute} = "):
                try:
                    names = ast.literal_eval(line.split("=", 1)[1].strip())
                except (ValueError, SyntaxError, RecursionError, MemoryError):
                    names = None
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise self.error(f"unreadable {attribute} line in the archive's code")
                return names
        return None

    def tensor(self, ref: _TensorRef) -> torch.Tensor:
        storage = ref.storage
        if storage.key not in self.storages:
            raw = bytearray(self.zip.read(f"{self.prefix}/data/{storage.key}"))
            if len(raw) != storage.numel * storage.dtype.itemsize:
                raise self.error(f"storage {storage.key} has {len(raw)} bytes instead of {storage.numel} x "
                                 f"{storage.dtype.itemsize} (is the download complete?)")
            self.storages[storage.key] = (torch.frombuffer(raw, dtype=storage.dtype) if raw
                                          else torch.empty(0, dtype=storage.dtype))
        flat = self.storages[storage.key]
        shape, stride, offset = ref.size, ref.stride, ref.offset
        if len(shape) != len(stride) or not all(type(v) is int and v >= 0 for v in (offset, *shape, *stride)):
            raise self.error("a tensor has an invalid shape or stride")
        if 0 not in shape and offset + sum((n - 1) * s for n, s in zip(shape, stride)) >= flat.numel():
            raise self.error("a tensor reaches past the end of its storage")
        view = flat.as_strided(shape, stride, offset)
        whole = offset == 0 and view.is_contiguous() and view.numel() == flat.numel()
        if whole and storage.key not in self.used:  # the usual case: one tensor per storage, no copy
            self.used.add(storage.key)
            return view
        return view.clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        path_ids: set[int] = set()

        def visit(record: _Record, key_prefix: str) -> None:
            if id(record) in path_ids:
                raise self.error("the module tree of the TorchScript archive has a cycle")
            path_ids.add(id(record))
            parameters, buffers = self.module_members(record.qualified_name)
            attributes = record.state
            if not isinstance(attributes, dict):
                raise self.error(f"module {record.qualified_name} keeps a custom state (__getstate__); its weights "
                                 "cannot be read without running its code")
            if buffers is None:  # archives that do not list buffers: every other tensor attribute is one
                buffers = [n for n, v in attributes.items() if isinstance(v, _TensorRef) and n not in parameters]
            for name in [*parameters, *buffers]:
                value = attributes.get(name)
                if value is None:
                    continue
                if not isinstance(value, _TensorRef):
                    raise self.error(f"{key_prefix}{name} is not a tensor")
                state[key_prefix + name] = self.tensor(value)
            for name, value in attributes.items():
                if isinstance(value, _Record) and self.module_members(value.qualified_name) is not None:
                    visit(value, f"{key_prefix}{name}.")
            path_ids.discard(id(record))

        visit(self.root(), "")
        return state


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """`torch.jit.load(path).state_dict()` without running the archive's code (see the module docstring)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zip_file:
            return _Archive(zip_file, path).state_dict()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UserError(f"cannot read TorchScript archive {path}: {type(exc).__name__} (is the download complete?)"
                        ) from None
